"""Masking of personal data: what the detectors find becomes a typed placeholder, and back again.

``Masker.mask`` replaces every value the detectors (``flowcloud.workers.core.detectors``)
find in a job's texts with ``<KIND_n>`` (``<EMAIL_1>``, ``<CN_ID_2>``), the same
value always getting the same placeholder within the job; ``Placeholders``, the
job's mapping, restores them in an answer. It fails closed: a detector that
raises, or a found value still present after masking, raises ``MaskingFailed``
and the caller sends nothing. Pure: no Redis, no I/O; the worker's mask stage
(``flowcloud.workers.pipeline.stages.mask``) and the client's submit path use it.
"""

from __future__ import annotations

import bisect
import importlib
import re
from collections import Counter
from typing import Iterable, TypeVar

from flowcloud.workers.core import detectors
from flowcloud.workers.core.config_sections import MaskSettings
from flowcloud.workers.core.detectors import Detector, Found
from flowcloud.workers.core.errors import ConfigError, MaskingFailed
from flowcloud.workers.core.jobspec import CompletionSpec, EmbeddingSpec, SummarizeSpec

PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*_\d+>")
Spec = TypeVar("Spec", CompletionSpec, EmbeddingSpec, SummarizeSpec)


class Placeholders:
    """One job's values and their placeholders; counts of what was masked, by kind."""

    def __init__(self, texts: Iterable[str] = ()) -> None:
        # Placeholder-like text the job already holds is never handed out, so restoring gives it back as it was.
        self._taken = {token for text in texts for token in PLACEHOLDER.findall(text)}
        self._by_value: dict[str, str] = {}
        self._values: dict[str, str] = {}
        self._numbers: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()

    def for_value(self, kind: str, value: str) -> str:
        self.counts[kind] += 1
        found = self._by_value.get(value)
        if found is None:
            found = self._next(kind)
            self._by_value[value], self._values[found] = found, value
        return found

    def _next(self, kind: str) -> str:
        while True:
            self._numbers[kind] += 1
            placeholder = f"<{kind}_{self._numbers[kind]}>"
            if placeholder not in self._taken:
                return placeholder

    def values(self) -> list[str]:
        """The masked values, longest first."""
        return sorted(self._by_value, key=len, reverse=True)

    def placeholder(self, value: str) -> str:
        return self._by_value[value]

    def restore(self, text: str) -> str:
        """``text`` with this job's placeholders put back; any other ``<...>`` stays as it is."""
        return PLACEHOLDER.sub(lambda match: self._values.get(match.group(), match.group()), text)

    def __len__(self) -> int:
        return len(self._by_value)


class Masker:
    """The detectors of a configuration, in the order their finds win an overlap."""

    def __init__(self, found_by: dict[str, Detector]) -> None:
        self.found_by = found_by

    def mask(self, texts: list[str]) -> tuple[list[str], Placeholders]:
        """``texts`` masked, and the mapping that restores them. Raises ``MaskingFailed``."""
        placeholders = Placeholders(texts)
        masked = [self._mask_one(text, placeholders) for text in texts]
        # A value found in one place is masked wherever else it stands, even where no detector saw it
        # (in another message, inside a longer run of digits): no found value may leave.
        for value in placeholders.values():
            masked = [text.replace(value, placeholders.placeholder(value)) for text in masked]
        if any(value in text for value in placeholders.values() for text in masked):
            raise MaskingFailed("a value found by a detector is still in the masked text")
        return masked, placeholders

    def _mask_one(self, text: str, placeholders: Placeholders) -> str:
        parts, position = [], 0
        for found in self.find(text):
            parts += [text[position:found.start], placeholders.for_value(found.kind, text[found.start:found.end])]
            position = found.end
        parts.append(text[position:])
        return "".join(parts)

    def find(self, text: str) -> list[Found]:
        """Every value found in ``text``, without overlaps (an earlier detector's find wins), in order."""
        starts: list[int] = []
        kept: list[Found] = []
        for name, detector in self.found_by.items():
            for found in self._run(name, detector, text):
                i = bisect.bisect_left(starts, found.start)
                clear_left = i == 0 or kept[i - 1].end <= found.start
                clear_right = i == len(kept) or found.end <= kept[i].start
                if clear_left and clear_right:
                    starts.insert(i, found.start)
                    kept.insert(i, found)
        return kept

    @staticmethod
    def _run(name: str, detector: Detector, text: str) -> list[Found]:
        try:
            finds = [_as_found(name, item) for item in detector(text)]
        except Exception as exc:
            # Neither the text nor the exception's own message goes on (either may hold what is
            # being masked): the kind of detector and the exception's type say enough.
            raise MaskingFailed(f"detector {name} raised {type(exc).__name__}") from None
        if any(not (0 <= f.start < f.end <= len(text)) for f in finds):
            raise MaskingFailed(f"detector {name} returned a span outside the text")
        return finds


def _as_found(name: str, item: Found | tuple[int, int]) -> Found:
    """A built-in detector yields ``Found``; a configured one may yield ``(start, end)`` of its kind."""
    if isinstance(item, Found):
        return item
    start, end = item
    return Found(int(start), int(end), name)


def masker_for(settings: MaskSettings) -> Masker:
    """The masker ``settings`` describe: the chosen built-in kinds, then the configured detectors.
    A configured detector that cannot be imported raises ``ConfigError`` naming it."""
    builtin = detectors.builtin(settings.phone_regions)
    found_by: dict[str, Detector] = {kind: builtin[kind] for kind in builtin if kind in settings.kinds}
    for i, custom in enumerate(settings.detectors):
        found_by[custom.kind] = _imported(f"mask.detectors.{i}.function", custom.function)
    return Masker(found_by)


def _imported(field: str, target: str) -> Detector:
    module_name, _, attribute = target.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(field, f"cannot import {target!r}: {exc}", "give module:function of a "
                          "function that takes a text and yields (start, end) spans") from exc
    if not callable(found):
        raise ConfigError(field, f"{target!r} is not callable")
    return found


def mask_spec(spec: Spec, masker: Masker) -> tuple[Spec, Placeholders]:
    """A copy of ``spec`` whose prompt texts are masked, and their mapping. Raises ``MaskingFailed``."""
    if isinstance(spec, CompletionSpec):
        texts, placeholders = masker.mask([m.content for m in spec.messages])
        messages = [m.model_copy(update={"content": text}) for m, text in zip(spec.messages, texts)]
        return spec.model_copy(update={"messages": messages}), placeholders
    field = "input" if isinstance(spec, EmbeddingSpec) else "text"
    [text], placeholders = masker.mask([getattr(spec, field)])
    return spec.model_copy(update={field: text}), placeholders


WITHHELD = "[text withheld: masking failed]"


def masked_preview(spec: Spec, settings: MaskSettings) -> str:
    """``spec``'s preview for Flower and logs, of its masked text when ``settings`` cover its flow. A text
    that cannot be masked is withheld: the preview must never be where the original leaks."""
    if not settings.covers(spec.flow):
        return spec.preview()
    masker = masker_for(settings)

    def masked(text: str) -> str:
        try:
            return masker.mask([text])[0][0]
        except MaskingFailed:
            return WITHHELD

    return spec.preview(mask=masked)
