"""Series names: those the stack exports (flowcloud's metrics and Flower's, from the real
prometheus_client objects; the recording rules; Prometheus's own) and those a PromQL query selects.
Used by tests/test_compose.py to check the Grafana dashboard.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

PROMETHEUS_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds", "scrape_samples_scraped"}


def flowcloud_series() -> set[str]:
    """Every sample name of flowcloud's metrics, from prometheus_client objects built from the catalogue."""
    import prometheus_client

    from flowcloud.workers.metrics import CATALOG

    registry = prometheus_client.CollectorRegistry()
    kinds = {"counter": prometheus_client.Counter, "gauge": prometheus_client.Gauge,
             "histogram": prometheus_client.Histogram}
    for spec in CATALOG:
        options = {"buckets": spec.buckets} if spec.type == "histogram" else {}
        metric = kinds[spec.type](spec.name, spec.help, spec.labels, registry=registry, **options)
        metric.labels(*["x"] * len(spec.labels))  # a child, so the samples are there to collect
    return {sample.name for family in registry.collect() for sample in family.samples}


def flower_series() -> set[str]:
    from flower.events import get_prometheus_metrics

    metrics = get_prometheus_metrics()
    names = set()
    for metric in vars(metrics).values():
        labels = getattr(metric, "_labelnames", ())
        for family in metric.labels(*["x"] * len(labels)).collect() if labels else metric.collect():
            names |= {sample.name for sample in family.samples}
    return names


def recorded_series(rules: Path) -> set[str]:
    groups = yaml.safe_load(rules.read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


PROMQL_CLAUSE = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
                   "group_right", "inf", "nan", "atan2"}


def promql_series(expr: str) -> set[str]:
    """The series names a PromQL expression selects: what is left without strings, label matchers,
    ranges, grouping clauses, functions and keywords."""
    expr = re.sub(r"\$\{?\w+\}?", "1m", expr)  # Grafana's $__range and friends
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = PROMQL_CLAUSE.sub("", expr)
    names = {m[0] for m in re.finditer(r"(?<![\w.:])[A-Za-z_:][\w:]*", expr)
             if not expr[m.end():].lstrip().startswith("(")}  # a function's name
    return {name for name in names if name.lower() not in PROMQL_KEYWORDS}
