"""Worker life-cycle hooks: log redaction once logging is set up, the redelivery
sweeper once the worker is ready (on a Redis broker), SIGHUP to read the providers' keys again,
pooled connections closed on exit, and the
Prometheus metrics: the endpoint served from the worker's parent, fed by task
signals and by the observers of the provider HTTP boundary and the record store."""

from __future__ import annotations

import logging

from celery import platforms, signals

from flowcloud.workers.core import broker, records
from flowcloud.workers import metrics
from flowcloud.workers import metrics_endpoint
from flowcloud.workers import runtime
from flowcloud.workers.core.celery_app import BUNDLE_TASK, COMPLETE_TASK, EMBED_TASK, FLOWS_QUEUE
from flowcloud.workers.core.config import get_config
from flowcloud.workers.core.guard import install_log_redaction
from flowcloud.workers.core.secrets import reload_all, share_reloads
from flowcloud.workers.providers import http
from flowcloud.workers.redelivery import start_sweeper

log = logging.getLogger(__name__)
_endpoint: metrics_endpoint.Endpoint | None = None


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def redact_logs(logger: logging.Logger | None = None, **_) -> None:
    install_log_redaction(logger)


@signals.worker_init.connect
def size_connection_pools(sender, **_) -> None:
    # A prefork child runs one message at a time: one job, or one bundle's jobs side by side;
    # gevent and threads run `concurrency` at once in one process.
    forked = "prefork" in getattr(sender.pool_cls, "__module__", "")
    runtime.size_for(get_config().worker.bundle_size if forked else sender.concurrency)


@signals.worker_init.connect
def preload_lfx_for_flow_workers(sender, **_) -> None:
    """Import lfx once in a flow worker's parent, so forked pool processes share it instead
    of each paying seconds and ~170 MB on their first flow."""
    if FLOWS_QUEUE in sender.app.amqp.queues:
        from flowcloud.workers import flow_runner

        flow_runner.preload()


@signals.worker_init.connect
def declare_queues(sender, **_) -> None:
    broker.declare_queues(sender.app)  # before the consumer starts and delayed delivery binds them


@signals.worker_ready.connect
def sweep_for_lost_jobs(sender, **_) -> None:
    config = get_config()
    if broker.sweeps_unacked(config):  # RabbitMQ gives a dead worker's messages back on its own
        start_sweeper(sender.app, config.worker.visibility_timeout)


@signals.worker_init.connect
def share_key_reloads(**_) -> None:
    share_reloads()  # before the pool forks: a prefork pool's processes then see the parent's SIGHUP


@signals.worker_ready.connect
def read_keys_again_on_hup(**_) -> None:
    """SIGHUP makes the worker read every provider key again, in all its pool's processes, instead of
    Celery's restart: a key rotated in its file or in Vault is used at once."""

    def read_again(signum, frame) -> None:
        reload_all()
        log.info("SIGHUP: provider keys are read again on their next use")

    platforms.signals["SIGHUP"] = read_again


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def close_providers(**_) -> None:
    runtime.close()


@signals.worker_init.connect
def serve_metrics(sender, **_) -> None:
    """Start this host's metrics endpoint in the worker's parent, before the pool forks, and
    wire the observers that feed it. ``metrics_port: 0`` turns metrics off for this worker."""
    global _endpoint
    config = get_config()
    if not config.metrics_port:
        log.info("metrics endpoint off (metrics_port is 0)")
        return
    _endpoint = metrics_endpoint.start(config, queues=sorted(sender.app.amqp.queues))
    if _endpoint is not None:
        http.request_observer = metrics.record_request
        records.write_observer = metrics.record_write


@signals.worker_process_init.connect
def leave_metrics_port_to_parent(**_) -> None:
    if _endpoint is not None:
        _endpoint.close_in_child()


@signals.worker_process_shutdown.connect
def forget_pool_process_gauges(pid: int | None = None, **_) -> None:
    if _endpoint is not None and pid:
        metrics_endpoint.process_gone(pid)


@signals.worker_shutdown.connect
def stop_metrics(**_) -> None:
    if _endpoint is not None:
        _endpoint.stop()


# The job pipeline counts its own jobs (flowcloud.workers.pipeline), a bundle's one by one:
# these count every other task.
PIPELINE_TASKS = frozenset({COMPLETE_TASK, EMBED_TASK, BUNDLE_TASK})


@signals.task_prerun.connect
def count_task_start(task=None, **_) -> None:
    if task.name not in PIPELINE_TASKS:
        metrics.record_task_start(metrics.queue_of(task.request), first_delivery=not task.request.retries)


@signals.task_postrun.connect
def count_task_end(task=None, **_) -> None:
    if task.name not in PIPELINE_TASKS:
        metrics.record_task_end()


@signals.task_retry.connect
def count_retry(sender=None, reason=None, **_) -> None:
    # reason is Celery's Retry; .exc is the error that caused it (None for a wait, not a retry).
    if getattr(sender, "name", None) not in PIPELINE_TASKS:
        metrics.record_retry(getattr(reason, "exc", None))
