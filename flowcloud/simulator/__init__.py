"""Provider simulator: an OpenAI-compatible HTTP server with latency and faults.

flowcloud's default provider when no real one is configured, and the provider
every test talks to. It answers chat completions, legacy completions (one
prompt or a list of them), embeddings and the model list with deterministic
content (see ``answer_for``), and injects faults on request: by the
``x-sim-fault`` header, by a ``[[sim:SPEC]]`` directive in prompt text, or at
random by rate. The grammar is described in ``flowcloud.simulator.faults``.

Run it with ``python -m flowcloud.simulator --port 8400`` or ``serve(...)``;
embed it with ``make_app`` (aiohttp) or ``start_in_thread``.
"""

from .answers import answer_for, count_tokens, embedding_for
from flowcloud.workers.core.errors import FaultSpecError

from .faults import FaultSpec, parse_fault_rates, parse_fault_spec
from .runner import BackgroundSimulator, listening_line, serve, start_in_thread
from .server import make_app
from .settings import Settings

__all__ = [
    "BackgroundSimulator",
    "FaultSpec",
    "FaultSpecError",
    "Settings",
    "answer_for",
    "count_tokens",
    "embedding_for",
    "listening_line",
    "make_app",
    "parse_fault_rates",
    "parse_fault_spec",
    "serve",
    "start_in_thread",
]
