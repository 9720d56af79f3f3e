"""Flower, started the flowcloud way: its ``/metrics`` answers loopback clients only.

Flower 2.2 puts basic auth on its pages and API but leaves ``/metrics`` open
(``flower.views.monitor.Metrics`` checks nobody), so a Flower listening on
``0.0.0.0`` tells anyone on the network the task names, workers and queue sizes.
Unless ``flower.metrics_public`` is true, this entry point swaps that handler for
one that refuses non-loopback clients with 403, then runs Celery's own
``celery flower`` command line unchanged. Flower builds its Tornado application
from the module-level list ``flower.urls.handlers``, so the swap must happen
before that command starts, in this process.

Flower takes the broker URL and its TLS options (``broker_use_ssl``, which its
own Redis client for queue lengths reads) from flowcloud's Celery app, never
from the command line, so a Redis password does not show in ``ps``.

    python -m flowcloud.cli.flower_app [flower options...]
"""

from __future__ import annotations

import ipaddress
import logging
import sys

log = logging.getLogger(__name__)

METRICS_PATH = r"/metrics"
REFUSAL = "Flower's /metrics answers loopback clients only; set flower.metrics_public: true to open it\n"


def is_loopback(remote_ip: str) -> bool:
    """Whether ``remote_ip`` (as Tornado reports the client) is this host's loopback."""
    try:
        address = ipaddress.ip_address(remote_ip)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 from a dual-stack socket
    return (mapped or address).is_loopback


def loopback_metrics_handler() -> type:
    """A subclass of Flower's metrics handler that answers 403 to any non-loopback client."""
    from flower.views.monitor import Metrics

    class LoopbackMetrics(Metrics):
        def prepare(self):
            # remote_ip is the socket's peer: Flower trusts X-Real-Ip only with --xheaders,
            # which flowcloud never passes.
            if not is_loopback(self.request.remote_ip):
                log.info("refused /metrics to %s (flower.metrics_public is false)", self.request.remote_ip)
                self.set_status(403)
                self.set_header("Content-Type", "text/plain")
                self.finish(REFUSAL)
                return None
            return super().prepare()

    return LoopbackMetrics


def guard_metrics(handlers: list) -> bool:
    """Replace Flower's ``/metrics`` entry in ``handlers`` (in place); False when it has none."""
    for index, handler in enumerate(handlers):
        if isinstance(handler, tuple) and handler[0] == METRICS_PATH:
            handlers[index] = (METRICS_PATH, loopback_metrics_handler(), *handler[2:])
            return True
    return False


def main(argv: list[str]) -> None:
    """Run ``celery -A flowcloud.workers.core.celery_app flower *argv`` with the metrics guard unless configured off."""
    import flower.urls
    from celery.bin.celery import main as celery_main

    from flowcloud.workers.core.config import get_config

    if not get_config().flower.metrics_public and not guard_metrics(flower.urls.handlers):
        # A Flower release that moved the route: starting with an open /metrics is not an option.
        raise SystemExit("flowcloud: cannot restrict Flower's /metrics in this Flower version; "
                         "set flower.metrics_public: true to start it anyway")
    sys.argv = ["celery", "-A", "flowcloud.workers.core.celery_app", "flower", *argv]
    celery_main()


if __name__ == "__main__":
    main(sys.argv[1:])
