"""Command line: ``python -m flowcloud.simulator --host 127.0.0.1 --port 8400 ...``.

Only parses options and hands them to ``serve``; a bad value exits with
status 2 and one line naming the option.
"""

from __future__ import annotations

import argparse
import os
import sys

from .faults import parse_fault_rates
from .runner import serve
from flowcloud.workers.core.errors import ConfigError, FaultSpecError

from .settings import API_KEY_ENV, BATCH_DELAY_ENV, BATCH_WINDOW_ENV, check_seconds


class _OneLineParser(argparse.ArgumentParser):
    """Reports a bad option in one line instead of usage plus message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _seconds(value: str) -> float:
    try:
        return check_seconds("value", value)
    except ConfigError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {value!r}") from None


def _port(value: str) -> int:
    if not value.isdigit() or int(value) > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535, got {value!r}")
    return int(value)


def _fault_rates(value: str) -> str:
    try:
        parse_fault_rates(value)
    except FaultSpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def build_parser(prog: str = "python -m flowcloud.simulator") -> argparse.ArgumentParser:
    parser = _OneLineParser(prog=prog,
                            description="OpenAI-compatible provider simulator with latency and faults.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=_port, default=8400, help="0 picks a free port")
    parser.add_argument("--latency", type=_seconds, default=0.0, help="seconds before each answer")
    parser.add_argument("--jitter", type=_seconds, default=0.0, help="up to this many extra seconds")
    parser.add_argument("--fault-rate", type=_fault_rates, default=None, metavar="SPEC",
                        help="random faults, e.g. 429=0.05,500=0.05,reset=0.01")
    parser.add_argument("--api-key", default=None, help=f"require this key (default: ${API_KEY_ENV})")
    parser.add_argument("--seed", type=int, default=None, help="seed for jitter and fault rates")
    parser.add_argument("--access-log", action="store_true", help="log every request to stderr")
    parser.add_argument("--batch-delay", type=_seconds, default=None, metavar="SECONDS",
                        help=f"a Batch API batch completes this long after its creation "
                             f"(default: ${BATCH_DELAY_ENV}, else 1)")
    parser.add_argument("--batch-window", type=_seconds, default=None, metavar="SECONDS",
                        help="the simulated 24h completion window: a batch slower than this expires "
                             f"(default: ${BATCH_WINDOW_ENV}, else 86400)")
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m flowcloud.simulator") -> int:
    args = build_parser(prog).parse_args(argv)
    # serve() reads the batch timing where Settings.build looks when it is not given.
    for value, variable in ((args.batch_delay, BATCH_DELAY_ENV), (args.batch_window, BATCH_WINDOW_ENV)):
        if value is not None:
            os.environ[variable] = str(value)
    try:
        serve(host=args.host, port=args.port, latency=args.latency, jitter=args.jitter,
              fault_rates=args.fault_rate, api_key=args.api_key, seed=args.seed,
              access_log=args.access_log)
    except ConfigError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{prog}: error: cannot listen on {args.host}:{args.port}: {exc}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
