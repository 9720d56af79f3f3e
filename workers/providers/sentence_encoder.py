"""A BERT sentence encoder in numpy: all-MiniLM-L6-v2's vectors without torch or sentence-transformers.

It reads a sentence-transformers model folder (``config.json``, ``tokenizer.json``,
``model.safetensors``, ``1_Pooling/config.json``, ``sentence_bert_config.json``)
and computes what sentence-transformers computes for it: the BERT encoder, the
mean of the last hidden states over the attention mask, then L2 normalisation.
The tokenizer is Hugging Face's own (``tokenizers``), read from the file: it
never reaches a model hub. Texts are tokenized first, so that the caller can
refuse one longer than the model's ``window`` (``max_seq_length`` word pieces,
256 for MiniLM) before any is encoded; nothing is cut short, since a vector of
half a text would be silently wrong.

This module only encodes; ``in_process.py`` is the provider around it, and
the one that turns a refusal into flowcloud's error.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

# One BLAS thread per call: a worker's parallelism is its job threads (numpy releases the GIL in a matrix
# product), and OpenBLAS threads spinning against them and other processes on a shared host were measured
# here to cut throughput twentyfold. Read when numpy loads: in a worker, that is here.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402


@dataclass(frozen=True)
class Tokens:
    """A batch of texts as word pieces, padded to its longest; ``counts`` are each text's own
    (its special tokens included)."""

    ids: np.ndarray
    types: np.ndarray
    mask: np.ndarray
    counts: list[int]


class SentenceEncoder:
    def __init__(self, directory: Path) -> None:
        config = _json(directory / "config.json")
        if config.get("hidden_act") != "gelu" or config.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{directory}: only BERT with exact GELU and absolute positions is supported")
        if not _json(directory / "1_Pooling" / "config.json").get("pooling_mode_mean_tokens"):
            raise ValueError(f"{directory}: only mean pooling is supported")
        self.window = int(_json(directory / "sentence_bert_config.json")["max_seq_length"])
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config["layer_norm_eps"])
        self.dimensions = int(config["hidden_size"])
        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        # The file ships sentence-transformers' export settings (truncate and pad to 128); the window is
        # the model's max_seq_length, and a batch is padded only to its longest text.
        self.tokenizer.no_truncation()
        self.tokenizer.enable_padding(pad_id=int(config.get("pad_token_id", 0)))
        self.weights = load_file(str(directory / "model.safetensors"))

    def tokenize(self, texts: list[str]) -> Tokens:
        encodings = self.tokenizer.encode_batch(texts)
        return Tokens(np.array([e.ids for e in encodings], dtype=np.int64),
                      np.array([e.type_ids for e in encodings], dtype=np.int64),
                      np.array([e.attention_mask for e in encodings], dtype=np.float32),
                      [sum(e.attention_mask) for e in encodings])

    def encode(self, tokens: Tokens) -> np.ndarray:
        """One unit vector per text, in order; every text must fit the ``window``."""
        if max(tokens.counts) > self.window:
            raise ValueError(f"a text of {max(tokens.counts)} word pieces does not fit the {self.window}-token window")
        mask = tokens.mask
        hidden = self.bert(tokens.ids, tokens.types, mask)
        pooled = (hidden * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    def bert(self, ids: np.ndarray, types: np.ndarray, mask: np.ndarray) -> np.ndarray:
        w = self.weights
        positions = np.arange(ids.shape[1])
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.token_type_embeddings.weight"][types]
             + w["embeddings.position_embeddings.weight"][positions][None])
        x = self.norm(x, "embeddings.LayerNorm")
        # Padding may not be attended to: a large negative bias before the softmax, as BERT's own.
        bias = ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :]
        for n in range(self.layers):
            x = self.layer(x, bias, f"encoder.layer.{n}.")
        return x

    def layer(self, x: np.ndarray, bias: np.ndarray, prefix: str) -> np.ndarray:
        attended = self.dense(self.attention(x, bias, prefix + "attention.self."), prefix + "attention.output.dense")
        x = self.norm(x + attended, prefix + "attention.output.LayerNorm")
        inner = gelu(self.dense(x, prefix + "intermediate.dense"))
        return self.norm(x + self.dense(inner, prefix + "output.dense"), prefix + "output.LayerNorm")

    def attention(self, x: np.ndarray, bias: np.ndarray, prefix: str) -> np.ndarray:
        batch, length, width = x.shape
        size = width // self.heads

        def heads(name: str) -> np.ndarray:
            return self.dense(x, prefix + name).reshape(batch, length, self.heads, size).transpose(0, 2, 1, 3)

        scores = heads("query") @ heads("key").transpose(0, 1, 3, 2) / math.sqrt(size) + bias
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        scores /= scores.sum(axis=-1, keepdims=True)
        return (scores @ heads("value")).transpose(0, 2, 1, 3).reshape(batch, length, width)

    def dense(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self.weights[name + ".weight"].T + self.weights[name + ".bias"]

    def norm(self, x: np.ndarray, name: str) -> np.ndarray:
        mean = x.mean(axis=-1, keepdims=True)
        variance = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
        return (x - mean) / np.sqrt(variance + self.eps) * self.weights[name + ".weight"] + self.weights[name + ".bias"]


def gelu(x: np.ndarray) -> np.ndarray:
    """BERT's exact GELU, x * Phi(x), not the tanh form (which moves vectors by about 1e-3)."""
    return x * 0.5 * (1.0 + erf(x / np.float32(math.sqrt(2.0))))


def erf(x: np.ndarray) -> np.ndarray:
    """numpy has none: Abramowitz and Stegun 7.1.26, within 1.5e-7 of erf, below float32's own error here."""
    t = 1.0 / (1.0 + 0.3275911 * np.abs(x))
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return np.sign(x) * (1.0 - poly * np.exp(-x * x))


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))
