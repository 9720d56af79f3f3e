"""Following the providers' model changes against the simulator over real HTTP: each adapter's model
list, Beat's model check raising and clearing its alerts in the real private Redis, and `flowcloud models`.

The simulator's lists are set through ``/_sim/config`` (``models``) and put back after each test.
"""

from __future__ import annotations

import json
import time

import pytest
import requests

from tests.conftest import KEY_ENV, config_yaml, free_port, run_cli
from flowcloud.workers.core.config import DEFAULTS, ProviderConfig, validate
from flowcloud.workers.core.errors import AuthenticationFailed
from flowcloud.workers.providers import ServedModel, build_provider

ROOTS = {"openai": "", "anthropic": "root", "azure": "root"}


@pytest.fixture
def serve(simulator):
    """Set the simulator's model lists: ids, or {"id", "deprecated": true | date}."""
    def set_models(models: list | None) -> None:
        requests.post(f"{simulator.root}/_sim/config", json={"models": models}).raise_for_status()

    yield set_models
    set_models(None)


def provider_entry(kind: str, name: str, simulator, models: list[str], base_url: str | None = None) -> dict:
    """A provider of ``kind`` on the simulator: OpenAI's root ends in /v1, Anthropic's and Azure's do not."""
    url = base_url or (simulator.root if ROOTS[kind] else simulator.url)
    return {"name": name, "kind": kind, "base_url": url, "allow_private": True, "api_key_env": KEY_ENV,
            "timeout": {"connect": 1, "read": 2}, "models": [{"name": m} for m in models],
            **({"api_version": "2024-10-21"} if kind == "azure" else {})}


def listed(kind: str, simulator) -> list[ServedModel]:
    provider = build_provider(ProviderConfig(**provider_entry(kind, f"sim-{kind}", simulator, ["gpt-4o"])), 1)
    try:
        return provider.models()
    finally:
        provider.close()


# -- the adapters' model lists ----------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["openai", "azure"])
def test_an_openai_shaped_list_names_the_models_and_marks_the_deprecated(kind, simulator, serve):
    serve(["gpt-4o-mini", {"id": "gpt-4o", "deprecated": "2026-01-31"}])
    assert listed(kind, simulator) == [ServedModel("gpt-4o-mini", deprecation_date=None if kind == "openai"
                                                   else "2100-01-01"),
                                       ServedModel("gpt-4o", deprecated=True, deprecation_date="2026-01-31")]


def test_anthropic_s_list_reaches_a_dated_snapshot_by_its_aliases(simulator, serve):
    serve(["claude-3-5-haiku-20241022", "claude-sonnet-4-5"])
    assert listed("anthropic", simulator) == [
        ServedModel("claude-3-5-haiku-20241022", aliases=("claude-3-5-haiku", "claude-3-5-haiku-latest")),
        ServedModel("claude-sonnet-4-5")]


def test_a_listing_error_goes_through_the_one_error_tree(simulator, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-not-the-right-one")
    with pytest.raises(AuthenticationFailed, match="sim-anthropic rejected the API key"):
        listed("anthropic", simulator)


def test_the_survey_tells_missing_deprecated_unreachable_and_unsupported_apart(simulator, serve):
    from flowcloud.workers.providers.survey import Standing, survey

    serve(["gpt-4o-mini", {"id": "gpt-4o", "deprecated": True}])
    dead = f"http://127.0.0.1:{free_port()}/v1"
    config = validate({**DEFAULTS, "default_model": "gpt-4o-mini", "providers": [
        provider_entry("openai", "live", simulator, ["gpt-4o-mini", "gpt-4o", "gpt-5"]),
        provider_entry("openai", "gone", simulator, ["other"], base_url=dead),
        # The simulator answers no Azure-style list under /v1: a 404, so the listing is unsupported.
        provider_entry("azure", "nolist", simulator, ["other-2"], base_url=simulator.url)]})
    found = {(r.provider, r.model): r for r in survey(config)}
    assert {key: r.standing for key, r in found.items()} == {
        ("live", "gpt-4o-mini"): Standing.SERVED, ("live", "gpt-4o"): Standing.DEPRECATED,
        ("live", "gpt-5"): Standing.MISSING, ("gone", "other"): Standing.UNREACHABLE,
        ("nolist", "other-2"): Standing.UNSUPPORTED}
    assert "connection failed" in found["gone", "other"].detail


# -- Beat's model check: real Redis, no worker -------------------------------------------------------

def test_the_model_check_alerts_on_a_missing_or_deprecated_model_and_clears_when_it_is_back(
        redis_server, simulator, serve, tag):
    from flowcloud.workers.alerts.checks import MODEL_CHECKS, run_checks
    from flowcloud.workers.alerts.state import AlertBook
    from flowcloud.workers.core.redis_conn import connect

    name = f"p{tag}"
    config = validate({**DEFAULTS, "redis_url": redis_server.url, "default_model": "gpt-4o-mini", "providers": [
        provider_entry("openai", name, simulator, ["gpt-4o-mini", "gpt-4o"])], "alerts": {}})
    client = connect(redis_server.url)

    def check() -> list[tuple[str, str]]:
        return [(n.alert, n.state) for n in run_checks(client, config, time.time(), MODEL_CHECKS)]

    assert check() == []  # both served: nothing to say
    serve(["gpt-4o-mini", {"id": "gpt-4o", "deprecated": "2026-01-31"}])
    assert check() == [(f"model:{name}/gpt-4o", "firing")]
    firing = {a["alert"]: a for a in AlertBook(client, 0).firing()}
    assert "is deprecated: marked deprecated as gpt-4o, retires 2026-01-31" in firing[f"model:{name}/gpt-4o"]["summary"]
    serve(["gpt-4o"])
    assert check() == [(f"model:{name}/gpt-4o-mini", "firing"), (f"model:{name}/gpt-4o", "resolved")]
    serve(None)
    assert check() == [(f"model:{name}/gpt-4o-mini", "resolved")]


def test_an_unreachable_provider_is_one_alert_and_its_models_keep_their_state(redis_server, simulator, serve, tag):
    from flowcloud.workers.alerts.checks import MODEL_CHECKS, run_checks
    from flowcloud.workers.core.redis_conn import connect

    name = f"p{tag}"
    entry = provider_entry("openai", name, simulator, ["gpt-4o-mini", "gpt-4o"])
    settings = {**DEFAULTS, "redis_url": redis_server.url, "default_model": "gpt-4o-mini", "alerts": {}}
    reachable = validate({**settings, "providers": [entry]})
    cut_off = validate({**settings, "providers": [{**entry, "base_url": f"http://127.0.0.1:{free_port()}/v1"}]})
    client = connect(redis_server.url)

    def check(config) -> list[tuple[str, str]]:
        return [(n.alert, n.state) for n in run_checks(client, config, time.time(), MODEL_CHECKS)]

    serve(["gpt-4o-mini"])
    assert check(reachable) == [(f"model:{name}/gpt-4o", "firing")]
    assert check(cut_off) == [(f"model_list:{name}", "firing")]  # not "gpt-4o-mini disappeared"
    serve(None)
    assert check(reachable) == [(f"model_list:{name}", "resolved"), (f"model:{name}/gpt-4o", "resolved")]


# -- flowcloud models ---------------------------------------------------------------------------------

def test_flowcloud_models_shows_each_configured_model_and_exits_6_when_one_is_missing(
        tmp_path, redis_server, simulator, serve):
    path = tmp_path / "models.yaml"
    path.write_text(config_yaml(redis_server.url, simulator.url))
    env = {"FLOWCLOUD_CONFIG": str(path)}

    done = run_cli("models", "--json", env=env)
    assert done.returncode == 0, done.stderr
    standings = {(r["provider"], r["model"]): r["standing"] for r in json.loads(done.stdout)["models"]}
    assert standings == {("sim", "gpt-4o-mini"): "served", ("sim", "gpt-4o"): "served",
                         ("sim", "gpt-3.5-turbo-instruct"): "served", ("sim", "text-embedding-3-small"): "served",
                         ("rejected", "needs-other-key"): "unreachable"}  # the wrong key: no list to judge by

    serve(["gpt-4o-mini", "gpt-3.5-turbo-instruct", {"id": "text-embedding-3-small", "deprecated": True}])
    shown = run_cli("models", env={**env, "COLUMNS": "250"})
    assert shown.returncode == 6, shown.stderr
    rows = {line.split("│")[2].strip(): line for line in shown.stdout.splitlines() if line.count("│") >= 4}
    assert "missing" in rows["gpt-4o"] and "deprecated" in rows["text-embedding-3-small"]
    assert "served" in rows["gpt-4o-mini"] and "provider unreachable" in rows["needs-other-key"]
    assert "Exit status" in run_cli("models", "--help").stdout


def test_a_worker_runs_beat_s_model_check_from_the_checks_queue(tmp_path, redis_server, simulator, serve,
                                                               start_worker):
    from flowcloud.workers.alerts.state import ALERT_PREFIX, INDEX_KEY, AlertBook
    from flowcloud.workers.core.celery_app import CHECK_MODELS_TASK, app
    from flowcloud.workers.core.redis_conn import connect

    path = tmp_path / "checks.yaml"
    path.write_text(config_yaml(redis_server.url, simulator.url) + f"var_dir: {tmp_path / 'var'}\nalerts: {{}}\n")
    worker = start_worker(queues="flowcloud.checks", env={"FLOWCLOUD_CONFIG": str(path)})
    serve(["gpt-4o-mini", "gpt-4o", "gpt-3.5-turbo-instruct"])
    app.send_task(CHECK_MODELS_TASK)
    deadline = time.monotonic() + 60
    while f"Task {CHECK_MODELS_TASK}[" not in worker.log() or " succeeded in " not in worker.log():
        assert time.monotonic() < deadline, worker.log()[-3000:]
        time.sleep(0.1)
    client = connect(redis_server.url)
    firing = {alert["alert"] for alert in AlertBook(client, 0).firing()}
    # The private Redis outlives this test: its alerts go, so no other test sees them firing.
    client.delete(*(ALERT_PREFIX + name for name in firing))
    client.srem(INDEX_KEY, *firing)
    assert {"model:sim/text-embedding-3-small", "model_list:rejected"} <= firing
    assert "model:sim/gpt-4o" not in firing
