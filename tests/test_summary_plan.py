"""The summary plan on its own: pure functions of the text, the model's entry and the settings.

No Redis, no worker: what the plan expects is checked against what the
chunking functions produce, and over document sizes with hypothesis.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings as hypothesis_settings, strategies as st

from flowcloud.workers.core.chunking import clean_text, estimate_tokens, map_prompt
from flowcloud.workers.core.config import ModelConfig, SummarizeSettings, load_config
from flowcloud.workers.core.summary_plan import (
    call_tokens, chunk_room, direct_call, fits, plan_summary, reduce_budget, summary_entry,
)

ENTRY = ModelConfig(name="gpt-4o-mini", input_per_mtok=0.15, output_per_mtok=0.60)  # 128k window
SETTINGS = SummarizeSettings()
SENTENCE = "The queue held jobs at noon and the workers drained it before the provider slowed down."


def document(chars: int) -> str:
    """About ``chars`` characters of prose in paragraphs of eight sentences."""
    paragraph = " ".join([SENTENCE] * 8)
    count = max(1, chars // (len(paragraph) + 2))
    text = "\n\n".join(f"{i}: {paragraph}" for i in range(count))
    return text[:chars] if chars < len(text) else text


def fitting_chars(entry: ModelConfig, settings: SummarizeSettings) -> int:
    """The most characters of text one call of ``entry`` takes beside the instruction and the summary."""
    return (entry.context_tokens - settings.summary_tokens - call_tokens(map_prompt(""))) * 4


def test_a_40_kb_document_is_one_call_at_a_direct_calls_cost():
    text = document(40_000)
    plan = plan_summary(text, ENTRY, SETTINGS)
    direct = direct_call(text, ENTRY, SETTINGS)
    assert (plan.strategy, plan.calls, plan.depth, plan.overlap_tokens) == ("cheapest", 1, 0, 0)
    assert plan.chunks == (clean_text(text),)
    assert plan.input_tokens == direct.input_tokens == call_tokens(map_prompt(clean_text(text)))
    assert plan.output_tokens == SETTINGS.summary_tokens and plan.cost_usd == direct.cost_usd
    fastest = plan_summary(text, ENTRY, SETTINGS, "fastest")
    assert fastest.calls > 2 and fastest.depth == 1 and fastest.cost_usd > plan.cost_usd


def test_a_600_kb_document_is_cut_into_the_largest_chunks_the_window_allows():
    text = document(600_000)
    plan = plan_summary(text, ENTRY, SETTINGS)
    fastest = plan_summary(text, ENTRY, SETTINGS, "fastest")
    assert not direct_call(text, ENTRY, SETTINGS).fits
    assert plan.levels[0].calls == len(plan.chunks) == 2 and plan.depth == 1 and plan.calls == 3
    assert plan.chunk_tokens <= chunk_room(ENTRY, SETTINGS) and plan.overlap_tokens == SETTINGS.overlap_tokens
    assert all(fits(map_prompt(chunk), SETTINGS.summary_tokens, ENTRY) for chunk in plan.chunks)
    assert plan.cost_usd <= fastest.cost_usd and fastest.levels[0].calls > 50
    assert plan.levels[0].input_tokens == sum(call_tokens(map_prompt(c)) for c in plan.chunks)


def test_fastest_cuts_chunks_of_chunk_tokens_with_their_overlap():
    plan = plan_summary(document(60_000), ENTRY, SETTINGS, "fastest")
    assert (plan.chunk_tokens, plan.overlap_tokens) == (SETTINGS.chunk_tokens, SETTINGS.overlap_tokens)
    assert all(estimate_tokens(chunk) <= SETTINGS.chunk_tokens for chunk in plan.chunks)
    overlap = plan.levels[0].input_tokens - call_tokens(map_prompt(clean_text(document(60_000))))
    assert overlap > 0  # the repeated text and the instruction of every chunk are priced in


def test_a_window_smaller_than_chunk_tokens_bounds_every_call():
    small = ModelConfig(name="small", input_per_mtok=1, output_per_mtok=2, context_tokens=1500)
    settings = SummarizeSettings(reduce_tokens=6000)
    plan = plan_summary(document(30_000), small, settings, "fastest")
    assert plan.chunk_tokens == chunk_room(small, settings) < settings.chunk_tokens
    assert all(fits(map_prompt(chunk), settings.summary_tokens, small) for chunk in plan.chunks)
    assert reduce_budget(small, settings) < settings.reduce_tokens
    assert all(level.input_tokens / level.calls + settings.summary_tokens <= 1500 for level in plan.levels)


def test_max_tokens_bounds_the_final_call_and_decides_the_fit():
    text = document(40_000)
    assert plan_summary(text, ENTRY, SETTINGS, max_tokens=50).output_tokens == 50
    tight = ModelConfig(name="tight", context_tokens=call_tokens(map_prompt(clean_text(text))) + 300)
    assert plan_summary(text, tight, SETTINGS).calls == 1
    longer = plan_summary(text, tight, SETTINGS, max_tokens=400)
    assert longer.calls > 1 and longer.levels[-1].output_tokens == 400
    assert all(fits(map_prompt(chunk), 400, tight) for chunk in longer.chunks)


def test_the_plan_reads_as_a_dict_and_a_line():
    plan = plan_summary(document(600_000), ENTRY, SETTINGS)
    shown = plan.as_dict()
    assert shown["calls"] == 3 and shown["depth"] == 1 and len(shown["levels"]) == 2
    assert shown["cost_usd"] == pytest.approx(plan.cost_usd) and "chunks" not in shown
    assert plan.describe().startswith("cheapest: 2 chunks of up to ")
    assert plan_summary("A short text.", ENTRY, SETTINGS).describe().startswith("cheapest: one call, 1 calls")


def test_the_window_is_the_serving_models_own(tmp_path):
    path = tmp_path / "flowcloud.yaml"
    path.write_text("""
default_model: small
providers:
  - {name: sim, kind: simulator, allow_private: true, models: [{name: small, context_tokens: 8000}, {name: big}]}
model_groups:
  - {name: pool, deployments: [{provider: sim, model: small}, {provider: sim, model: big}]}
""")
    config = load_config({"FLOWCLOUD_CONFIG": str(path)})
    assert summary_entry(config, None).context_tokens == 8000
    assert summary_entry(config, "big").context_tokens == 128_000
    assert summary_entry(config, "pool").context_tokens == 8000  # a group: its first deployment


@hypothesis_settings(max_examples=60, deadline=None)
@given(st.data())
def test_a_document_that_fits_never_expects_to_cost_more_than_one_direct_call(data):
    entry = ModelConfig(name="m", input_per_mtok=data.draw(st.floats(0, 20)), output_per_mtok=data.draw(st.floats(0, 80)),
                        context_tokens=data.draw(st.integers(1_000, 200_000)))
    settings = SummarizeSettings(summary_tokens=data.draw(st.integers(16, 600)))
    text = document(data.draw(st.integers(1, fitting_chars(entry, settings))))
    plan, direct = plan_summary(text, entry, settings), direct_call(text, entry, settings)
    assert direct.fits and plan.calls == 1
    assert plan.cost_usd <= direct.cost_usd and plan.input_tokens <= direct.input_tokens


@hypothesis_settings(max_examples=40, deadline=None)
@given(context=st.integers(1_500, 20_000), chars=st.integers(1, 400_000), chunk=st.integers(400, 4_000))
@example(context=1747, chars=11280, chunk=1300)  # as many chunks either way, the smaller ones a token cheaper
def test_cheapest_never_expects_to_cost_more_than_fastest(context, chars, chunk):
    entry = ModelConfig(name="m", input_per_mtok=0.15, output_per_mtok=0.60, context_tokens=context)
    settings = SummarizeSettings(chunk_tokens=chunk, overlap_tokens=chunk // 20)
    text = document(chars)
    cheapest, fastest = plan_summary(text, entry, settings), plan_summary(text, entry, settings, "fastest")
    assert cheapest.cost_usd <= fastest.cost_usd
    assert cheapest.calls <= fastest.calls
    assert all(fits(map_prompt(c), settings.summary_tokens, entry) for c in cheapest.chunks + fastest.chunks)
