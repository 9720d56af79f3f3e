"""The Azure OpenAI adapter: OpenAI's API as Azure serves it, one deployment per model.

The bodies and answers are OpenAI's, so this is the OpenAI adapter with two seams
changed: a call goes to ``{base_url}/openai/deployments/{deployment}/...?api-version=V``
(the model entry's ``deployment``, else its name), and the key travels in an
``api-key`` header. Azure's 429 headers (``retry-after-ms``, ``retry-after``,
``x-ratelimit-remaining-*``) are read by the HTTP boundary like anyone's. Azure's
Batch API takes other paths and a deployment per line: not offered here. The model
list is the resource's ``/openai/models`` (the base models its region serves, with
their lifecycle), read as a configured model's name, not its deployment's.
"""

from __future__ import annotations

from urllib.parse import quote

from flowcloud.workers.providers.base import Capability, Provider
from flowcloud.workers.providers.openai import OpenAIProvider


class AzureOpenAIProvider(OpenAIProvider):
    capabilities = frozenset({Capability.CHAT, Capability.COMPLETIONS, Capability.EMBEDDINGS, Capability.MODELS})
    batch_api = Provider.batch_api

    def url(self, path: str, model: str) -> str:
        return (f"{self.config.base_url}/openai/deployments/{quote(self.deployment(model), safe='')}{path}"
                f"?api-version={quote(self.config.api_version or '', safe='')}")

    def models_path(self) -> str:
        return f"/openai/models?api-version={quote(self.config.api_version or '', safe='')}"

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"api-key": key}

    def deployment(self, model: str) -> str:
        """The deployment that serves ``model``: the one its entry names, else one named like the model."""
        entry = self.config.price(model)
        return entry.deployment if entry is not None and entry.deployment else model
