"""The masker on its own: what it masks and keeps (checksums right and wrong), its placeholders, restoring,
failing closed, and properties over arbitrary text (hypothesis)."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stdnum import luhn
from stdnum.cn import ric

from flowcloud.workers.core.config import validate
from flowcloud.workers.core.config_sections import MASK_KINDS, MaskSettings
from flowcloud.workers.core.detectors import builtin, phones_in
from flowcloud.workers.core.errors import ConfigError, MaskingFailed
from flowcloud.workers.core.jobspec import build_embedding_spec, build_spec
from flowcloud.workers.core.masking import mask_spec, masker_for

MASKER = masker_for(MaskSettings())


def with_check_digit(digits: str) -> str:
    return digits + luhn.calc_check_digit(digits)


def wrong_check_digit(number: str) -> str:
    """``number`` with its last digit changed, so its checksum fails."""
    return number[:-1] + str((int(number[-1]) + 1) % 10)


UNIONPAY = with_check_digit("621234567890123")
CN_ID = "11010519491231002X"
CN_ID_2 = "44030419900307" + "123"
CN_ID_2 += ric.calc_check_digit(CN_ID_2 + "?")  # it reads the 17 digits before the check character

# (text, kind): each is masked whole as that kind.
MASKED = [
    ("li.wei@example.com.cn", "EMAIL"),
    ("ops+alerts@mail.example.org", "EMAIL"),
    ("13812345678", "PHONE"),
    ("+86 138 1234 5678", "PHONE"),
    ("010-6552 9988", "PHONE"),
    ("+44 20 7946 0958", "PHONE"),
    ("+1 650-253-0000", "PHONE"),
    ("+33 1 42 68 53 00", "PHONE"),
    ("4111 1111 1111 1111", "CARD"),
    ("4111-1111-1111-1111", "CARD"),
    ("378282246310005", "CARD"),
    ("3782 822463 10005", "CARD"),
    (UNIONPAY, "CARD"),
    ("GB82 WEST 1234 5698 7654 32", "IBAN"),
    ("DE89370400440532013000", "IBAN"),
    (CN_ID, "CN_ID"),
    (CN_ID_2, "CN_ID"),
    ("192.168.10.20", "IP"),
    ("2001:db8::8a2e:370:7334", "IP"),
    ("::ffff:127.0.0.1", "IP"),
    ("sk-proj-Q2hhbmdlTWVQbGVhc2UxMjM0NTY3OA", "SECRET"),
    ("sk-ant-api03-abcdefghijklmnopqrstuv", "SECRET"),
    ("ghp_" + "a1B2c3D4e5" * 4, "SECRET"),
    ("AKIAIOSFODNN7EXAMPLE", "SECRET"),
    ("x9Qm2LrT7vKp4ZsW8nBc3HdY6fJg1RtE", "SECRET"),
]

# Kept as they are: the same kinds of digits with a wrong check digit, and look-alikes.
KEPT = [
    wrong_check_digit("4111111111111111"),
    "4111 1111 1111 1112",
    wrong_check_digit(UNIONPAY),
    "GB83 WEST 1234 5698 7654 32",
    "DE88370400440532013000",
    "110105194912310021",  # CN_ID with a wrong check character
    "110105194913310028",  # no 13th month
    "324111111111111112",  # a prefecture's place code, not a county's (python-stdnum raised KeyError on it)
    "12345678901",  # 11 digits, no valid phone
    "+44 20 7946",
    "999.1.1.1",
    "12:30:45",
    "std::vector",
    "version 1.2.3",
    "order 20231115",
    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",  # a hex digest
    "sk-short",
    "the_quick_brown_fox_jumps_over_the_lazy_dog",
]


@pytest.mark.parametrize("value, kind", MASKED)
def test_a_valid_value_is_masked_whole_as_its_kind(value, kind):
    [masked], placeholders = MASKER.mask([f"see {value} here"])
    assert masked == f"see <{kind}_1> here"
    assert dict(placeholders.counts) == {kind: 1}
    assert placeholders.restore(masked) == f"see {value} here"


@pytest.mark.parametrize("value", KEPT)
def test_a_wrong_checksum_or_a_look_alike_is_kept(value):
    [masked], placeholders = MASKER.mask([f"see {value} here"])
    assert masked == f"see {value} here"
    assert len(placeholders) == 0


def test_the_same_value_gets_the_same_placeholder_across_a_jobs_messages():
    texts = ["Write to a@example.com or b@example.com.", "Again: a@example.com, call 13812345678 or 13812345678"]
    masked, placeholders = MASKER.mask(texts)
    assert masked == ["Write to <EMAIL_1> or <EMAIL_2>.", "Again: <EMAIL_1>, call <PHONE_1> or <PHONE_1>"]
    assert dict(placeholders.counts) == {"EMAIL": 3, "PHONE": 2}
    assert [placeholders.restore(t) for t in masked] == texts


def test_a_value_found_once_is_masked_where_no_detector_saw_it():
    # The second card is glued to letters, where the card detector does not look.
    [masked], _ = MASKER.mask(["card 4111111111111111 and ref X4111111111111111Y"])
    assert masked == "card <CARD_1> and ref X<CARD_1>Y"


def test_placeholder_like_text_in_a_prompt_survives_restoring():
    text = "the template says <EMAIL_1>; the real one is a@example.com"
    [masked], placeholders = MASKER.mask([text])
    assert masked == "the template says <EMAIL_1>; the real one is <EMAIL_2>"
    assert placeholders.restore(masked) == text
    assert placeholders.restore("Reply to <EMAIL_2>, not <EMAIL_1> or <PHONE_9>") == \
        "Reply to a@example.com, not <EMAIL_1> or <PHONE_9>"


def test_a_check_digit_wins_over_a_phone_number_that_the_digits_also_spell():
    [masked], _ = MASKER.mask([f"id {CN_ID_2} and card {UNIONPAY}"])
    assert masked == "id <CN_ID_1> and card <CARD_1>"


def test_a_spec_is_masked_in_every_message_and_an_embedding_in_its_input():
    spec = build_spec("mail a@example.com", system="the operator is ops@example.com", max_tokens=5)
    masked, placeholders = mask_spec(spec, MASKER)
    assert [m.content for m in masked.messages] == ["the operator is <EMAIL_1>", "mail <EMAIL_2>"]
    assert masked.max_tokens == 5 and spec.messages[1].content == "mail a@example.com"  # the original is untouched
    embedded, _ = mask_spec(build_embedding_spec("from 10.0.0.7", model="m"), MASKER)
    assert embedded.input == "from <IP_1>"


def test_only_the_chosen_kinds_and_a_sites_own_detector_run():
    masker = masker_for(MaskSettings(kinds=["EMAIL"], detectors=[{"kind": "TICKET",
                                                                   "function": "tests.mask_detectors:tickets"}]))
    [masked], _ = masker.mask(["a@example.com 13812345678 TCK-123456"])
    assert masked == "<EMAIL_1> 13812345678 <TICKET_1>"


def test_a_detector_that_raises_fails_closed_without_quoting_the_text():
    masker = masker_for(MaskSettings(detectors=[{"kind": "BROKEN", "function": "tests.mask_detectors:broken"}]))
    with pytest.raises(MaskingFailed) as failed:
        masker.mask(["mail a@example.com"])
    assert str(failed.value) == "detector BROKEN raised RuntimeError"
    assert failed.value.__cause__ is None and failed.value.__suppress_context__
    assert failed.value.to_record()["kind"] == "masking_failed"


def test_a_detector_that_returns_a_span_outside_the_text_fails_closed():
    masker = masker_for(MaskSettings(kinds=[]))
    masker.found_by["ODD"] = lambda text: [(0, len(text) + 5)]
    with pytest.raises(MaskingFailed, match="outside the text"):
        masker.mask(["abc"])


@pytest.mark.parametrize("mask, field, problem", [
    ({"restore": True, "at_submit": True}, "mask.restore", "never reach a worker"),
    ({"phone_regions": ["XX"]}, "mask.phone_regions", "unknown region(s) XX"),
    ({"kinds": ["EMAIL", "NAME"]}, "mask.kinds.1", "EMAIL"),
    ({"detectors": [{"kind": "ticket", "function": "m:f"}]}, "mask.detectors.0.kind", "pattern"),
    ({"detectors": [{"kind": "T", "function": "no colon"}]}, "mask.detectors.0.function", "pattern"),
    ({"restor": True}, "mask.restor", "unknown setting"),
])
def test_bad_mask_settings_name_the_field(mask, field, problem):
    with pytest.raises(ConfigError) as bad:
        validate({"providers": [{"name": "p", "kind": "openai", "models": [{"name": "gpt-4o-mini"}]}], "mask": mask})
    assert bad.value.field == field and problem in str(bad.value)


def test_a_detector_that_cannot_be_imported_is_a_config_error():
    with pytest.raises(ConfigError) as bad:
        masker_for(MaskSettings(detectors=[{"kind": "T", "function": "tests.mask_detectors:nowhere"}]))
    assert bad.value.field == "mask.detectors.0.function"


def test_local_presets_are_not_clouds_and_others_are():
    config = validate({"providers": [
        {"name": "cloud", "kind": "openai", "models": [{"name": "gpt-4o-mini"}]},
        {"name": "ollama", "preset": "ollama", "models": [{"name": "qwen3:0.6b"}]},
        {"name": "llamacpp", "preset": "llamacpp"},
        {"name": "mine", "kind": "openai", "cloud": False, "models": [{"name": "m"}]},
    ]})
    assert [p.cloud for p in config.providers] == [True, False, False, False]


def test_every_kind_the_settings_name_has_a_detector():
    assert tuple(builtin(["CN"])) == ("EMAIL", "SECRET", "IBAN", "CN_ID", "CARD", "IP", "PHONE")
    assert set(builtin(["CN"])) == set(MASK_KINDS)


def test_flows_switch_masking_on_and_off():
    settings = MaskSettings(enabled=False, flows={"payroll": True})
    assert settings.covers("payroll") and not settings.covers("public") and not settings.covers(None)
    settings = MaskSettings(flows={"public": False})
    assert not settings.covers("public") and settings.covers("other") and settings.covers(None)


# -- properties

SAMPLES = [value for value, _ in MASKED] + KEPT + ["<EMAIL_1>", "<CARD_2>", "@", "+", "-", ":", ".", " ", "\n"]
texts = st.lists(st.one_of(st.text(max_size=12), st.sampled_from(SAMPLES)), max_size=10).map("".join)
PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(st.text(max_size=400))
def test_arbitrary_text_never_crashes_the_masker(text):
    [masked], placeholders = MASKER.mask([text])
    assert placeholders.restore(masked) == text


@PROPERTY
@given(st.lists(texts, min_size=1, max_size=3))
def test_masking_then_restoring_gives_the_original_texts(originals):
    masked, placeholders = MASKER.mask(originals)
    assert [placeholders.restore(text) for text in masked] == originals


@PROPERTY
@given(texts)
def test_no_value_a_detector_found_survives_in_the_masked_text(text):
    found = [text[f.start:f.end] for f in MASKER.find(text)]
    [masked], _ = MASKER.mask([text])
    assert not [value for value in found if value in masked]


@PROPERTY
@given(texts)
def test_the_phone_detector_finds_what_the_matcher_finds_in_the_whole_text(text):
    # It reads only the stretches around runs of digits: that must lose nothing.
    whole = [(m.start, m.end) for m in phonenumbers.PhoneNumberMatcher(text, "CN", leniency=phonenumbers.Leniency.VALID)]
    assert [(f.start, f.end) for f in phones_in(["CN"])(text)] == whole
