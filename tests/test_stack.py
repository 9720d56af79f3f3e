"""`flowcloud up --exit-after-demo` as a new user runs it: no Redis URL, no key, embedded everything."""

import json
import os
import socket
import subprocess
import sys

import pytest

from tests.conftest import free_port, wait_for_llama_server_build

LOCAL_CONFIG = """
providers:
  - name: simulator
    kind: simulator
    base_url: http://127.0.0.1:{sim_port}/v1
    allow_private: true
    models:
      - {{name: gpt-4o-mini, input_per_mtok: 0.15, output_per_mtok: 0.60}}
  - name: local
    preset: llamacpp
    base_url: http://127.0.0.1:{local_port}/v1
model_groups:
  - name: assistant
    deployments: [{{provider: simulator, model: gpt-4o-mini}}]
    hybrid: {{local: {{provider: local, model: smollm2-135m-instruct}}}}
flower: {{port: {flower_port}}}
"""


@pytest.mark.llama_server
def test_up_runs_the_demo_and_stops_everything(tmp_path):
    wait_for_llama_server_build()  # the demo serves the local model when it is installed
    sim_port, flower_port, local_port = free_port(), free_port(), free_port()
    (tmp_path / "flowcloud.yaml").write_text(LOCAL_CONFIG.format(sim_port=sim_port, flower_port=flower_port,
                                                                 local_port=local_port))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWCLOUD_")}
    done = subprocess.run([sys.executable, "-m", "flowcloud.cli", "up", "--exit-after-demo"],
                          cwd=tmp_path, env={**env, "COLUMNS": "160"}, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "flowcloud is up" in done.stdout and "password" in done.stdout
    # `make test` installs the local model: the stack serves it on the port its provider names.
    assert f"local      smollm2-135m-instruct http://127.0.0.1:{local_port}/v1" in done.stdout
    assert "Beat" in done.stdout and "beat: Starting" in (tmp_path / "var" / "logs" / "beat.log").read_text()
    assert "5 summarized, 0 skipped, 0 failed of 5 documents" in done.stdout
    output = tmp_path / "var" / "demo-summaries"
    report = json.loads((output / "run-report.json").read_text())
    assert (report["status"], report["done"], report["flow"]) == ("completed", 5, "demo")
    long_report = next(r for r in report["results"] if r["name"] == "riverside-libraries-annual-report.txt")
    # The long sample document fits the model's window: the cheapest plan summarizes it in one call.
    assert long_report["chunks"] == 1
    assert len(list(output.glob("*.summary.md"))) == 5
    # The hybrid split, for real: the local model answers the simple questions, the simulator the rest.
    assert "3 of 5 answered on this machine" in done.stdout
    assert "The capital of Fran" in done.stdout  # SmolLM2's own answer, cut to the table's column
    assert "stopped" in done.stdout
    for port in (sim_port, flower_port, local_port):
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open after the stack stopped"
    assert not (tmp_path / "var" / "redis.sock").exists()
