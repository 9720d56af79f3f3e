"""Finders of personal data and secrets in text: where each value is and what kind it is.

A detector takes a text and yields ``Found`` spans; ``flowcloud.workers.core.masking``
turns them into placeholders. Numbers with a check digit count only when it is
right (``python-stdnum``: Luhn for cards, mod 97 for IBANs, the resident
identity number's ISO 7064 checksum and birth date); phone numbers are what
``phonenumbers`` finds valid; IP addresses what ``ipaddress`` parses; for these,
regular expressions only propose candidates. E-mail addresses and keys are found
by expression alone, conservatively. Pure: no I/O, no state.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import phonenumbers
from stdnum import iban, luhn
from stdnum.cn import ric

Detector = Callable[[str], Iterable["Found"]]


@dataclass(frozen=True)
class Found:
    """One value in a text: ``text[start:end]`` is of ``kind`` (EMAIL, PHONE, ...)."""

    start: int
    end: int
    kind: str


# No library of the field finds e-mail addresses in running text (email-validator checks one
# address given alone), so a regular expression does: a dotted domain with a 2+ letter top level.
EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]++@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                   r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}")
# Every phone number has 7 digits or more, country code included, written with these between them;
# the matcher reads each such stretch with this much around it (a "+", "tel:", a bracket, an extension).
MAYBE_PHONE = re.compile(r"\d(?:[\s().+/-]*+\d){6,}")
PHONE_CONTEXT_CHARS = 24
# A card as it is written: 13-19 digits in one run, in groups of four (the last one or two shorter:
# 16 or 19 digits), or Amex's 4-6-5. Only these shapes: any 13+ digits pass Luhn one time in ten.
CARD = re.compile(r"(?<![\w-])(?:\d{13,19}|\d{4}(?P<sep>[ -])\d{4}(?P=sep)\d{4}(?P=sep)\d{1,4}(?:(?P=sep)\d{1,3})?"
                  r"|\d{4}(?P<amex>[ -])\d{6}(?P=amex)\d{5})(?!\w)")
CARD_LENGTHS = range(13, 20)  # Visa 13/16/19, Amex 15, UnionPay and Maestro up to 19
# An IBAN: country, check digits, then the account in groups (or none); the longest valid prefix counts.
IBAN_RUN = re.compile(r"(?<![\w])[A-Z]{2}\d{2}(?: ?[A-Z0-9])++(?![\w])")
CN_ID = re.compile(r"(?<![\w])\d{17}[\dXx](?![\w])")
IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)")
IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?"
                  r"(?![\w:]|\.\d)")
# Keys with a published prefix (OpenAI, Anthropic, DeepSeek sk-; GitHub; Slack; AWS; Google).
PREFIXED_SECRET = re.compile(
    r"(?<![\w-])(?:sk-[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_-]{35})(?![\w-])")
# Any other long token counts only when it looks random: upper and lower case and digits mixed, and
# at least 4 bits of entropy per character. Hex digests, words and base-10 ids all stay.
TOKEN = re.compile(r"(?<![\w+/=-])[A-Za-z0-9_+/=-]{32,}+(?![\w+/=-])")
MIN_TOKEN_ENTROPY = 4.0


def emails(text: str) -> Iterator[Found]:
    for match in EMAIL.finditer(text):
        yield Found(match.start(), match.end(), "EMAIL")


def phones_in(regions: Iterable[str]) -> Detector:
    """Phone numbers valid for ``phonenumbers``: national forms of ``regions`` (``CN``: 138..., 010-...),
    and international ones (``+44 ...``) whatever the region."""
    regions = tuple(regions)

    def phones(text: str) -> Iterator[Found]:
        # The matcher is the slowest detector by far: it reads only the stretches that could hold a number.
        for start, end in _windows(text, MAYBE_PHONE, PHONE_CONTEXT_CHARS):
            for region in regions:
                for match in phonenumbers.PhoneNumberMatcher(text[start:end], region,
                                                             leniency=phonenumbers.Leniency.VALID):
                    yield Found(start + match.start, start + match.end, "PHONE")

    return phones


def cards(text: str) -> Iterator[Found]:
    for match in CARD.finditer(text):
        written = match.group()
        # Four groups of four and a short one: 19 digits, or a 16-digit card and something after it.
        for candidate in (written, written[:19]) if len(written) > 19 and match.group("sep") else (written,):
            number = re.sub(r"[ -]", "", candidate)
            if len(number) in CARD_LENGTHS and luhn.is_valid(number):
                yield Found(match.start(), match.start() + len(candidate), "CARD")
                break


def ibans(text: str) -> Iterator[Found]:
    for match in IBAN_RUN.finditer(text):
        parts = [(m.end(), m.group()) for m in re.finditer(r"[A-Z0-9]+", match.group())]
        for n in range(len(parts), 0, -1):  # the longest prefix that is a valid IBAN
            if iban.is_valid("".join(part for _, part in parts[:n])):
                yield Found(match.start(), match.start() + parts[n - 1][0], "IBAN")
                break


def cn_resident_ids(text: str) -> Iterator[Found]:
    for match in CN_ID.finditer(text):
        if _is_resident_id(match.group()):
            yield Found(match.start(), match.end(), "CN_ID")


def ip_addresses(text: str) -> Iterator[Found]:
    for pattern in (IPV6, IPV4):  # IPv6 first: it may end in an IPv4 address (::ffff:127.0.0.1)
        for match in pattern.finditer(text):
            if _is_ip(match.group()):
                yield Found(match.start(), match.end(), "IP")


def secrets(text: str) -> Iterator[Found]:
    for match in PREFIXED_SECRET.finditer(text):
        yield Found(match.start(), match.end(), "SECRET")
    for match in TOKEN.finditer(text):
        if _looks_random(match.group()):
            yield Found(match.start(), match.end(), "SECRET")


def _windows(text: str, pattern: re.Pattern, margin: int) -> Iterator[tuple[int, int]]:
    """The stretches of ``text`` around ``pattern``'s matches, ``margin`` characters wider on each side,
    overlapping ones merged."""
    start = end = None
    for match in pattern.finditer(text):
        low, high = max(match.start() - margin, 0), min(match.end() + margin, len(text))
        if end is not None and low <= end:
            end = max(end, high)
            continue
        if end is not None:
            yield start, end
        start, end = low, high
    if end is not None:
        yield start, end


def _is_resident_id(number: str) -> bool:
    try:
        return ric.is_valid(number)
    except KeyError:  # python-stdnum 2.2: a place code of a prefecture, not a county, escapes is_valid
        return False


def _is_ip(candidate: str) -> bool:
    if not re.search(r"[0-9A-Fa-f]", candidate):  # "::" alone, as in C++'s std::
        return False
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


def _looks_random(token: str) -> bool:
    if not (re.search(r"[a-z]", token) and re.search(r"[A-Z]", token) and re.search(r"\d", token)):
        return False
    counts = Counter(token)
    entropy = -sum(n / len(token) * math.log2(n / len(token)) for n in counts.values())
    return entropy >= MIN_TOKEN_ENTROPY


def builtin(regions: Iterable[str]) -> dict[str, Detector]:
    """The built-in detectors by kind, in the order their finds win an overlap: a checked number or
    a key before a phone number that the same digits might also spell."""
    return {"EMAIL": emails, "SECRET": secrets, "IBAN": ibans, "CN_ID": cn_resident_ids, "CARD": cards,
            "IP": ip_addresses, "PHONE": phones_in(regions)}

