"""The Prometheus artefacts in deploy/: promtool accepts the configuration and the rules and
passes the rules' unit tests, and every flowcloud series they use is one the workers export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from flowcloud.workers.metrics import exported_names

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
EXPORTED_NAME = re.compile(r"\bflowcloud_[a-z0-9_]+")
RECORDED_NAME = re.compile(r"\bflowcloud:[a-z0-9_:]+")
INSTALL_HINT = ("promtool is not installed: `apt-get install -y prometheus` (Debian's package ships it); "
                ".ci/run installs it when missing")


def promtool(*args: str, cwd: Path = DEPLOY) -> subprocess.CompletedProcess:
    if shutil.which("promtool") is None:
        pytest.fail(INSTALL_HINT)
    return subprocess.run(["promtool", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load((DEPLOY / "rules.yml").read_text())["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "flowcloud.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_promtool_checks_the_rules():
    checked = promtool("check", "rules", "rules.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_promtool_rule_tests_pass():
    tested = promtool("test", "rules", "rules.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_promtool_checks_the_scrape_configuration():
    checked = promtool("check", "config", "prometheus.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_alerts_the_deployment_promises_exist():
    alerts = {rule["alert"]: rule for rule in rules() if "alert" in rule}
    assert {"FlowcloudProviderErrorRateHigh", "FlowcloudBudget80Percent", "FlowcloudBudgetExhausted",
            "FlowcloudBacklogGrowing", "FlowcloudWorkerDown"} <= set(alerts)
    assert alerts["FlowcloudProviderErrorRateHigh"]["for"] == "5m"


def test_every_flowcloud_series_used_is_exported():
    used = {name for rule in rules() for name in EXPORTED_NAME.findall(rule["expr"])}
    used |= {name for expr in dashboard_exprs() for name in EXPORTED_NAME.findall(expr)}
    assert len(used) > 10
    assert used <= exported_names(), sorted(used - exported_names())


def test_every_recorded_series_used_is_recorded():
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    used = {name for expr in dashboard_exprs() for name in RECORDED_NAME.findall(expr)}
    used |= {name for rule in rules() for name in RECORDED_NAME.findall(rule["expr"])}
    assert used <= recorded, sorted(used - recorded)


def test_dashboard_queries_are_valid_promql(tmp_path):
    # promtool parses every expression of a rules file: check the panels' queries as rules.
    exprs = [expr.replace("$__range", "1h") for expr in dashboard_exprs()]
    as_rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": expr} for i, expr in enumerate(exprs)]}]}
    (tmp_path / "dashboard.rules.yml").write_text(yaml.safe_dump(as_rules))
    checked = promtool("check", "rules", "dashboard.rules.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
