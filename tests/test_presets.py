"""Provider kinds and presets in the configuration: what a preset fills in, what the user's own settings
override, and mistakes refused naming their field."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import ROOT
from flowcloud.workers.core import presets
from flowcloud.workers.core.config import validate
from flowcloud.workers.core.errors import ConfigError

ISSUE_EXAMPLE = """
providers:
  - name: claude
    kind: anthropic
    base_url: https://api.anthropic.com
    api_key_env: ANTHROPIC_API_KEY
    models:
      - {name: claude-haiku-4-5, input_per_mtok: 1.00, output_per_mtok: 5.00, context_tokens: 200000}
  - name: deepseek
    preset: deepseek            # base URL, models, windows and prices from the preset
    api_key_env: DEEPSEEK_API_KEY
  - name: azure-east
    kind: azure
    base_url: https://my-resource.openai.azure.com
    api_version: "2024-10-21"
    api_key_env: AZURE_OPENAI_KEY
    models:
      - {name: gpt-4o-mini, deployment: my-4o-mini, input_per_mtok: 0.15, output_per_mtok: 0.60, context_tokens: 128000}
"""


def one_provider(**settings):
    entry = {"name": "p", **settings}
    models = entry.get("models") or presets.table()[entry["preset"]]["models"]
    return validate({"providers": [entry], "default_model": models[0]["name"]}).providers[0]


def test_the_documented_example_validates():
    config = validate(yaml.safe_load((ROOT / "docs" / "examples" / "clouds.yaml").read_text()))
    assert [p.kind for p in config.providers] == ["anthropic", "openai", "openai", "azure"]
    assert config.providers[2].base_url == "https://dashscope.aliyuncs.com/compatible-mode/v1"


def test_the_issue_s_example_validates():
    config = validate(yaml.safe_load(ISSUE_EXAMPLE))
    claude, deepseek, azure = config.providers
    assert (claude.kind, claude.anthropic_version, claude.default_max_tokens) == ("anthropic", None, 4096)
    assert deepseek.kind == "openai" and deepseek.base_url == "https://api.deepseek.com/v1"
    assert deepseek.endpoints == ["chat"] and deepseek.api_key_env == "DEEPSEEK_API_KEY"
    assert config.serving("deepseek-reasoner")[0].name == "deepseek"
    assert azure.models[0].deployment == "my-4o-mini" and azure.api_version == "2024-10-21"


def test_a_preset_fills_in_url_endpoints_windows_and_prices():
    deepseek = one_provider(preset="deepseek")
    chat = deepseek.price("deepseek-chat")
    assert chat.context_tokens == 128_000 and chat.input_per_mtok > 0 and chat.output_per_mtok > 0
    claude = one_provider(preset="anthropic")
    assert claude.kind == "anthropic" and claude.base_url == "https://api.anthropic.com"


@pytest.mark.parametrize("preset, region, url", [
    ("dashscope", None, "https://dashscope-intl.aliyuncs.com/compatible-mode/v1"),
    ("dashscope", "cn", "https://dashscope.aliyuncs.com/compatible-mode/v1"),
    ("moonshot", "intl", "https://api.moonshot.ai/v1"),
    ("moonshot", None, "https://api.moonshot.cn/v1"),
])
def test_a_region_picks_the_base_url(preset, region, url):
    assert one_provider(preset=preset, **({"region": region} if region else {})).base_url == url


def test_the_user_s_own_settings_win():
    own = one_provider(preset="deepseek", base_url="https://proxy.example.com/v1/", timeout={"read": 120},
                       models=[{"name": "deepseek-chat", "input_per_mtok": 0.1, "output_per_mtok": 0.2}])
    assert own.base_url == "https://proxy.example.com/v1" and own.timeout.read == 120
    assert [m.name for m in own.models] == ["deepseek-chat"] and own.models[0].input_per_mtok == 0.1
    region_beaten = one_provider(preset="dashscope", region="cn", base_url="https://qwen.example.com/v1")
    assert region_beaten.base_url == "https://qwen.example.com/v1"
    local = one_provider(preset="ollama", models=[{"name": "qwen3:0.6b"}])
    assert local.base_url == "http://127.0.0.1:11434/v1" and local.kind == "openai"


def test_every_preset_is_a_valid_provider():
    for name, preset in presets.table().items():
        models = None if preset.get("models") else [{"name": "local-model"}]
        provider = one_provider(preset=name, **({"models": models} if models else {}))
        assert provider.preset == name and provider.endpoints


@pytest.mark.parametrize("entry, field, problem", [
    ({"preset": "nope"}, "providers.0.preset", "unknown preset 'nope' (presets: anthropic, ark, dashscope"),
    ({"kind": "azure", "base_url": "https://r.openai.azure.com", "models": [{"name": "m"}]},
     "providers.0.api_version", 'needs it (e.g. api_version: "2024-10-21")'),
    ({"models": [{"name": "m"}]}, "providers.0.kind", "or a preset (anthropic"),
    ({"preset": "dashscope", "region": "mars"}, "providers.0.region", "regions: intl, cn"),
    ({"preset": "deepseek", "region": "cn"}, "providers.0.region", "no regions"),
    ({"kind": "openai", "region": "cn", "models": [{"name": "m"}]}, "providers.0.region", "add preset"),
    ({"preset": "vllm"}, "providers.0.models", "knows no models"),
    ({"preset": "deepseek", "models": [{"name": "e", "kind": "embedding"}]}, "providers.0.models.0",
     "needs the embeddings endpoint"),
    ({"kind": "anthropic", "models": [{"name": "m"}]}, "providers.0.base_url", "https://api.anthropic.com"),
    ({"kind": "openai", "api_version": "2024-10-21", "models": [{"name": "m"}]}, "providers.0.api_version",
     "only kind: azure"),
    ({"kind": "openai", "anthropic_version": "2023-06-01", "models": [{"name": "m"}]},
     "providers.0.anthropic_version", "only kind: anthropic"),
    ({"kind": "openai", "models": [{"name": "m", "deployment": "d"}]}, "providers.0.models.0.deployment",
     "only kind: azure"),
])
def test_mistakes_name_their_field(entry, field, problem):
    with pytest.raises(ConfigError) as caught:
        validate({"providers": [{"name": "p", **entry}], "default_model": "m"})
    assert caught.value.field == field and problem in str(caught.value)


def test_the_table_says_its_prices_are_list_prices_of_a_date():
    text = presets.PRESETS_FILE.read_text()
    assert "LIST prices" in text
    assert yaml.safe_load(text)["prices_as_of"]
