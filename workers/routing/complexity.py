"""How complex a prompt is, scored without a model call, so a small local model takes the simple ones.

A prompt's score is the weighted sum of a few features, each between 0 and 1,
read from its text in microseconds: its length, code in it, reasoning and
multi-step markers, arithmetic, how many questions it asks, the constraints it
sets, and whether it is in a language the local tier serves. Weights and the
threshold are data in the configuration (``hybrid.weights``, ``hybrid.threshold``):
a score at or above the threshold goes to the cloud tier. Every decision keeps
its score and the features that weighed most, so it can be explained.

LiteLLM's complexity router, the field's reference, sorts prompts into tiers
by keyword lists and a token count; this adds arithmetic (which small models
get wrong), the number of questions and constraints, language (a small model
often serves one), and Chinese markers beside English ones, and it explains each
choice by its features.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from flowcloud.workers.core.chunking import estimate_tokens

# A prompt this long scores 1 on length; the score grows with the log of its tokens up to there.
LONG_PROMPT_TOKENS = 1_000

CODE = re.compile(
    r"```|\bdef |\bclass |=>|;\s*$|\{[^}]*\}|\bSELECT\b|\b(?:function|script|query|program|regex|refactor|debug"
    r"|compile|bug|code)\b|代码|函数|编程|程序|脚本",
    re.IGNORECASE | re.MULTILINE)
REASONING = re.compile(
    r"\b(?:why|explain|prove|derive|analy[sz]e|compare|evaluate|justify|reason(?:ing)?|trade-?offs?|pros and cons"
    r"|implications?|critique|design|architect|optimi[sz]e|strategy|plan)\b|为什么|解释|证明|推导|分析|比较|评估|论证|权衡|设计|优化|优缺点",
    re.IGNORECASE)
STEPS = re.compile(
    r"\b(?:step by step|first(?:ly)?|then|next|finally|afterwards)\b|^\s*\d+[.)]\s|首先|然后|接着|最后|步骤|分步",
    re.IGNORECASE | re.MULTILINE)
ARITHMETIC = re.compile(r"\d+\s*[-+*/×÷^%]\s*\d+|\b(?:calculate|compute|solve|equation|integral|percent)\b|计算|求解|方程",
                        re.IGNORECASE)
CONSTRAINTS = re.compile(
    r"\b(?:must|at least|at most|no more than|exactly|only|without|format|json|table|bullet|words?|limit)\b"
    r"|必须|至少|最多|不超过|恰好|只|格式|表格|字以内",
    re.IGNORECASE)
QUESTION = re.compile(r"[?？]")
CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


@dataclass(frozen=True)
class Complexity:
    score: float
    features: dict[str, float] = field(default_factory=dict)  # each feature's value, before weighting
    top: list[str] = field(default_factory=list)  # the features that added most, largest first

    def as_record(self) -> dict:
        return {"score": round(self.score, 3), "top": self.top,
                "features": {name: round(value, 3) for name, value in self.features.items() if value}}


def features_of(text: str, local_languages: frozenset[str]) -> dict[str, float]:
    return {
        "length": min(math.log1p(rough_tokens(text)) / math.log1p(LONG_PROMPT_TOKENS), 1.0),
        # One sign of code or of reasoning is enough: a small model fails at either.
        "code": min(float(len(CODE.findall(text))), 1.0),
        "reasoning": min(float(len(REASONING.findall(text))), 1.0),
        "steps": min(len(STEPS.findall(text)) / 3, 1.0),
        "arithmetic": min(float(len(ARITHMETIC.findall(text))), 1.0),
        "questions": min(max(len(QUESTION.findall(text)) - 1, 0) / 2, 1.0),  # one question is the norm
        "constraints": min(len(CONSTRAINTS.findall(text)) / 3, 1.0),
        "language": 0.0 if language_of(text) in local_languages else 1.0,
    }


def rough_tokens(text: str) -> int:
    """Tokens, roughly: a Chinese character is about one, other text about four characters each."""
    chinese = len(CJK.findall(text))
    return chinese + estimate_tokens(CJK.sub("", text))


def language_of(text: str) -> str:
    """``zh`` when a fair share of the letters are Chinese characters, else ``en``."""
    letters = sum(ch.isalpha() for ch in text) or 1
    return "zh" if len(CJK.findall(text)) / letters > 0.2 else "en"


def score(text: str, weights: dict[str, float], local_languages: frozenset[str] = frozenset({"en"})) -> Complexity:
    found = features_of(text, local_languages)
    parts = {name: weights.get(name, 0.0) * value for name, value in found.items()}
    top = [name for name, part in sorted(parts.items(), key=lambda item: -item[1]) if part > 0][:3]
    return Complexity(sum(parts.values()), found, top)
