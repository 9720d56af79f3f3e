"""Alert sinks: where a firing or resolved alert is told, the worker's log or a webhook.

A webhook gets a Slack-compatible JSON body (``text`` plus one ``attachments``
entry with the alert's figures), posted only to the URL the configuration
names, without following redirects, with a short timeout, through the SSRF guard
(``flowcloud.workers.core.ssrf``: a loopback or private address only with the
sink's ``allow_private``). A sink that fails is
logged and skipped: telling someone must never break the check that noticed.
Notices carry counts and names, never prompts or keys; the webhook's URL and
headers (often secrets themselves) never reach a log line.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Iterable
from urllib.parse import urlsplit

from flowcloud.workers.core.config_sections import AlertSink
from flowcloud.workers.core.errors import AddressRefused, WebhookRefused
from flowcloud.workers.core.ssrf import Guard
from flowcloud.workers.providers.http import make_pool

log = logging.getLogger(__name__)

FIRING = "firing"
RESOLVED = "resolved"
# Who dials, as refusals name it.
WEBHOOK = "alert webhook"
# Slack's attachment colours: red while firing, green once resolved.
COLOURS = {FIRING: "danger", RESOLVED: "good"}


@dataclass(frozen=True)
class Notice:
    """One alert changing state (or firing again after the repeat interval)."""

    alert: str
    state: str  # FIRING or RESOLVED
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    repeat: bool = False

    def headline(self) -> str:
        again = " (still firing)" if self.repeat else ""
        return f"[{self.state.upper()}] flowcloud {self.alert}{again}: {self.summary}"


def slack_body(notice: Notice) -> dict[str, Any]:
    """The webhook's JSON body: Slack's ``text`` and ``attachments``, readable by most chat webhooks."""
    fields = [{"title": name, "value": str(value), "short": True} for name, value in notice.details.items()]
    return {
        "text": notice.headline(),
        "attachments": [{"color": COLOURS[notice.state], "fallback": notice.headline(), "fields": fields}],
    }


def where(url: str) -> str:
    """A webhook URL shown without credentials, path or query, which may hold a token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def send_to_log(notice: Notice) -> None:
    level = logging.WARNING if notice.state == FIRING else logging.INFO
    log.log(level, "alert %s %s", notice.headline(), notice.details)


def send_to_webhook(sink: AlertSink, notice: Notice) -> None:
    url = sink.url or ""
    # A pool of its own per post: alerts are rare, and each sink has its own guard.
    pool = make_pool(1, url, Guard(WEBHOOK, allow_private=sink.allow_private))
    try:
        response = pool.request("POST", url, body=json.dumps(slack_body(notice)).encode(),
                                headers={**sink.headers, "Content-Type": "application/json"},
                                timeout=sink.timeout, redirect=False)  # a redirect would lead it elsewhere
    finally:
        pool.clear()
    if response.status >= 300:
        raise WebhookRefused(f"answered HTTP {response.status}")


def deliver(sinks: Iterable[AlertSink], notices: Iterable[Notice]) -> int:
    """Tell every sink of every notice; returns how many deliveries failed (each is logged)."""
    failed = 0
    for notice in notices:
        for sink in sinks:
            try:
                send_to_log(notice) if sink.kind == "log" else send_to_webhook(sink, notice)
            except Exception as exc:  # noqa: BLE001 - one broken sink must not silence the others
                failed += 1
                target = where(sink.url) if sink.url else sink.kind
                # Only the type of a transport error: urllib3 may put the full URL, token and all, in its text.
                reason = str(exc) if isinstance(exc, (WebhookRefused, AddressRefused)) else type(exc).__name__
                log.warning("alert %s: the %s sink at %s failed: %s", notice.alert, sink.kind, target, reason)
    return failed
