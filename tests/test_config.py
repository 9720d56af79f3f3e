"""Configuration: the documented shape loads, every mistake names its field."""

import pytest

from tests.conftest import run_cli
from flowcloud.workers.core.config import load_config, redacted
from flowcloud.workers.core.errors import ConfigError, InvalidJob

ISSUE_SHAPE = """
providers:
  - name: main
    kind: openai                 # the OpenAI-compatible adapter
    base_url: https://api.example.com/v1
    api_key_env: MAIN_API_KEY    # the key itself never appears in the file
    timeout: {connect: 5, read: 60}
    models:
      - {name: gpt-4o-mini, input_per_mtok: 0.15, output_per_mtok: 0.60}
default_model: gpt-4o-mini
"""


def load(tmp_path, text, **env):
    path = tmp_path / "flowcloud.yaml"
    path.write_text(text)
    return load_config({"FLOWCLOUD_CONFIG": str(path), **env})


def test_documented_shape_loads(tmp_path):
    config = load(tmp_path, ISSUE_SHAPE)
    provider = config.providers[0]
    assert (provider.name, provider.timeout.read, provider.price("gpt-4o-mini").output_per_mtok) == ("main", 60, 0.6)


TWO_PROVIDERS = ISSUE_SHAPE.replace("default_model: gpt-4o-mini\n", """\
  - name: spare
    kind: openai
    models:
      - {name: gpt-4o-mini, input_per_mtok: 9}
      - {name: gpt-4o, input_per_mtok: 2.5}
default_model: gpt-4o-mini
""")


def test_the_first_provider_listing_a_model_serves_it_at_its_price(tmp_path):
    config = load(tmp_path, TWO_PROVIDERS)
    provider, price = config.serving("gpt-4o-mini")
    assert (provider.name, price.input_per_mtok) == ("main", 0.15)
    assert config.serving("gpt-4o")[0].name == "spare" and config.model("gpt-4o") == config.serving("gpt-4o")[1]
    with pytest.raises(InvalidJob, match=r"no provider serves model 'gpt-9'; configured models: gpt-4o-mini, gpt-4o$"):
        config.serving("gpt-9")
    assert config.model("gpt-9") is None


def test_defaults_use_the_simulator():
    config = load_config({})
    assert config.uses_simulator() and config.default_model == "gpt-4o-mini"
    assert config.redis_url_or_embedded().startswith("redis+socket://")


def test_environment_overrides(tmp_path):
    config = load(tmp_path, ISSUE_SHAPE, FLOWCLOUD_REDIS_URL="redis://h:1/2", FLOWCLOUD_METRICS_PORT="9999",
                  FLOWCLOUD_WORKER__CONCURRENCY="77")
    assert (config.redis_url, config.metrics_port, config.worker.concurrency) == ("redis://h:1/2", 9999, 77)


@pytest.mark.parametrize(
    "text, field",
    [
        (ISSUE_SHAPE.replace("name: main", "name: Main!"), "providers.0.name"),
        (ISSUE_SHAPE.replace("base_url: https://api.example.com/v1", "base_url: api.example.com"),
         "providers.0.base_url"),
        (ISSUE_SHAPE.replace("read: 60", "read: -1"), "providers.0.timeout.read"),
        (ISSUE_SHAPE.replace("api_key_env: MAIN_API_KEY", "api_key_env: sk-live-abc"), "providers.0.api_key_env"),
        (ISSUE_SHAPE.replace("models:", "modles:"), "providers.0.modles"),
        (ISSUE_SHAPE.replace("default_model: gpt-4o-mini", "default_model: gpt-5"), "default_model"),
        (ISSUE_SHAPE.replace("kind: openai", "kind: carrier-pigeon"), "providers.0.kind"),
        ("providers: [", "line"),
    ],
)
def test_mistakes_name_the_field(tmp_path, text, field):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert field in str(caught.value)


def test_bad_environment_value_names_the_variable(tmp_path):
    with pytest.raises(ConfigError, match=r"FLOWCLOUD_METRICS_PORT"):
        load(tmp_path, ISSUE_SHAPE, FLOWCLOUD_METRICS_PORT="lots")


def test_missing_config_file_is_named():
    with pytest.raises(ConfigError, match="FLOWCLOUD_CONFIG"):
        load_config({"FLOWCLOUD_CONFIG": "/nonexistent/flowcloud.yaml"})


def test_redacted_view_hides_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("MAIN_API_KEY", "sk-secret-value-123")
    config = load(tmp_path, ISSUE_SHAPE, FLOWCLOUD_REDIS_URL="redis://user:hunter2@host:6379/0")
    shown = str(redacted(config))
    assert "sk-secret-value-123" not in shown and "hunter2" not in shown
    assert "MAIN_API_KEY (set)" in shown


def test_config_check_and_worker_refuse_a_broken_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text(ISSUE_SHAPE.replace("read: 60", "read: soon"))
    env = {"FLOWCLOUD_CONFIG": str(path)}
    for command in (["config", "check"], ["worker"]):
        done = run_cli(*command, env=env)
        assert done.returncode == 2, done
        assert "providers.0.timeout.read" in done.stderr
        assert "Traceback" not in done.stderr


def test_config_check_prints_the_effective_configuration():
    done = run_cli("config", "check")
    assert done.returncode == 0, done.stderr
    assert "configuration OK" in done.stdout and "FLOWCLOUD_TEST_PROVIDER_KEY (set)" in done.stdout


def test_visibility_timeout_must_outlast_a_provider_call(tmp_path):
    with pytest.raises(ConfigError, match=r"worker.visibility_timeout: 30 s is too short"):
        load(tmp_path, ISSUE_SHAPE + "worker: {visibility_timeout: 30}\n")
