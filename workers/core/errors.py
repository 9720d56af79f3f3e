"""The one error tree of flowcloud.

Everything flowcloud raises on purpose derives from ``FlowcloudError``::

    FlowcloudError
    ├── ConfigError                  bad configuration: names the field and the fix
    ├── BrokerUnavailable            Redis cannot be reached
    ├── BeatLeaseLost                a Beat's lease in Redis lapsed: another may send; it stops (flowcloud.beat.scheduler)
    ├── ChildFailed                  a process of `flowcloud up` died (raised by flowcloud.cli.supervisor)
    ├── WebhookRefused               an alert webhook answered other than 2xx (flowcloud.workers.alerts.sinks)
    ├── FaultSpecError               a simulator fault spec or rate table off its grammar; also a ValueError
    ├── InvalidJob                   a job that cannot run as given (unknown model, bad option)
    │   ├── Unsupported              its provider's adapter lacks what it asks (embeddings, Batch API)
    │   └── LimitExceeded            over an input limit (flowcloud.workers.core.limits): names the setting
    ├── BudgetExceeded               a job's worst-case cost does not fit a budget (flowcloud.workers.budget)
    ├── MaskingFailed                personal data could not be masked: nothing was sent (flowcloud.workers.core.masking)
    ├── FlowFailed                   a flow job's flow did not load, or one of its components failed
    ├── InternalError                a job ended on an error flowcloud did not expect: a bug
    ├── JobError                     client side: a job cannot be found or read in time
    │   ├── JobNotFound
    │   └── JobTimeout
    └── ProviderError                a call to a cloud AI provider failed
        ├── TransportError           no usable HTTP answer            (retryable)
        │   ├── ProviderTimeout      connect or read timeout
        │   └── ProviderConnectionError  refused, reset, DNS, TLS
        ├── KeyUnavailable           no key could be read from its source (env, file, Vault)  (retryable)
        ├── MalformedResponse        an answer we cannot read          (retryable)
        ├── AnswerRejected           an answer that failed its check: the next tier takes the job
        ├── AddressRefused           the SSRF guard refused where a URL leads (permanent; also webhooks)
        ├── InputTooLong             an input over an in-process model's window: a larger one may take it
        ├── ModelUnavailable         an in-process model is not installed
        └── ProviderStatusError      the provider answered with an error status
            ├── BadRequest 400 · AuthenticationFailed 401 · PermissionDenied 403
            │   NotFound 404 · UnprocessableRequest 422          (permanent)
            └── RequestTimeout 408 · Conflict 409 · RateLimited 429
                ServerError 5xx                                   (retryable)

Whether an error is worth retrying is data on its class, decided here once, and
so is whether another deployment of the job's model group may do better
(``deployment_fault``: every provider error but a request the job got wrong);
nothing else in the code inspects status codes or message text to decide it.
No error class is defined anywhere else, with one exception that is not an
error of flowcloud's: the simulator's ``BadRequest`` (``flowcloud.simulator.api``)
is how the fake provider turns a request it rejects into a 400 reply, and it
never leaves the simulator.
This module imports nothing from the rest of flowcloud: the light client uses it.
"""

from __future__ import annotations

from pathlib import Path


class FlowcloudError(Exception):
    """Root of every error flowcloud raises on purpose."""

    kind = "error"
    retryable = False

    def to_record(self) -> dict:
        """The JSON-safe form stored in a failed job's result record."""
        return {"kind": self.kind, "message": str(self), "retryable": self.retryable}

    def __reduce__(self):
        # Keyword-only constructors defeat Exception's default pickling, which
        # Celery needs to report a failed task's error intact.
        return _restore, (type(self), self.args, self.__dict__)


def _restore(cls: type[FlowcloudError], args: tuple, state: dict) -> FlowcloudError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class ConfigError(FlowcloudError):
    """The configuration is invalid; ``field`` is its dotted path (``providers.0.base_url``)."""

    def __init__(self, field: str, reason: str, hint: str | None = None) -> None:
        self.field = field
        self.reason = reason
        self.hint = hint
        message = f"{field}: {reason}" if field else reason
        super().__init__(f"{message} ({hint})" if hint else message)


class BrokerUnavailable(FlowcloudError):
    """Redis, the broker and record store, does not answer."""


class BeatLeaseLost(FlowcloudError):
    """A Beat found its lease on the schedule gone (it was paused, or Redis lost it): it stops before sending."""


class ChildFailed(FlowcloudError):
    """A process of the local stack died or never became ready; the message ends with its log's last lines."""

    def __init__(self, name: str, what: str, log_path: Path, log_tail: list[str]) -> None:
        self.name = name
        self.log_path = log_path
        super().__init__(f"{name} {what}; last lines of {log_path}:\n" + "\n".join(log_tail))


class WebhookRefused(FlowcloudError):
    """An alert webhook answered with a status other than 2xx; its sink is skipped and logged."""


class FaultSpecError(FlowcloudError, ValueError):
    """A simulator fault spec or rate table that does not follow the grammar (``flowcloud.simulator.faults``)."""


class InvalidJob(FlowcloudError):
    """A job's request cannot run as given; it fails at once, alone."""

    kind = "invalid_job"


class Unsupported(InvalidJob):
    """A job asks a provider for something its adapter does not offer; another provider might.

    ``capability`` is the adapter capability's stable name (``batch_api``); its kind stays
    ``invalid_job``, so records and metrics see it as the job error it is.
    """

    def __init__(self, provider: str, capability: str, what: str) -> None:
        self.provider = provider
        self.capability = capability
        super().__init__(f"provider {provider!r} offers no {what}; use a model served by a provider that does")


class LimitExceeded(InvalidJob):
    """A submission over one of the input limits: refused whole at submit, before anything is queued, or
    failed alone by the worker that reads it (a message from a client that did not check). ``limit``
    is the limit's name (``prompt_chars``), ``field`` the setting that sets it (``limits.prompt_chars``)."""

    kind = "limit_exceeded"

    def __init__(self, limit: str, *, value: int, maximum: int, field: str, what: str,
                 fix: str | None = None) -> None:
        self.limit = limit
        self.value = value
        self.maximum = maximum
        self.field = field
        super().__init__(f"{limit}: {what}, over the limit of {maximum:,} set by {field}; "
                         f"{fix or f'send less, or raise {field} in the configuration'}")

    def to_record(self) -> dict:
        return {**super().to_record(), "limit": self.limit, "value": self.value, "maximum": self.maximum,
                "field": self.field}


class BudgetExceeded(FlowcloudError):
    """A job would take a budget past its limit; it fails at once and calls no provider."""

    kind = "budget_exceeded"

    def __init__(self, budget: str, *, limit_usd: float, used_usd: float, reserved_usd: float,
                 needed_usd: float) -> None:
        self.budget = budget
        self.limit_usd = limit_usd
        self.used_usd = used_usd
        self.reserved_usd = reserved_usd
        self.needed_usd = needed_usd
        super().__init__(
            f"budget {budget!r} would be exceeded: limit {_usd(limit_usd)}, used {_usd(used_usd)}, "
            f"reserved by running jobs {_usd(reserved_usd)}, this job needs up to {_usd(needed_usd)}"
        )

    def to_record(self) -> dict:
        return {**super().to_record(), "budget": self.budget}


def _usd(amount: float) -> str:
    """Dollars with enough digits for the fractions of a cent one call costs: $0.05, $0.000725."""
    whole, _, cents = f"{amount:.6f}".partition(".")
    return f"${whole}.{cents.rstrip('0').ljust(2, '0')}"


class MaskingFailed(FlowcloudError):
    """A job's text could not be masked (a detector raised, a found value survived): it fails at once,
    and nothing of it goes to the provider. The message names the detector, never the text."""

    kind = "masking_failed"


class FlowFailed(FlowcloudError):
    """The flow could not be loaded or one of its components failed."""

    kind = "flow_failed"


class InternalError(FlowcloudError):
    """A job ended on an error flowcloud did not expect: a bug, not the provider's doing or the job's.
    The worker's log holds the traceback."""

    kind = "internal"


class JobError(FlowcloudError):
    """A job cannot be found or read."""


class JobNotFound(JobError):
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"no job {job_id!r}: it never existed or its record expired")


class JobTimeout(JobError):
    def __init__(self, job_id: str, timeout: float, status: str) -> None:
        self.job_id = job_id
        self.status = status
        super().__init__(f"job {job_id} still {status} after {timeout:g} s")


class ProviderError(FlowcloudError):
    """A provider call failed. ``kind`` is the short stable name used in records and metrics."""

    kind = "provider_error"
    # The deployment's fault, not the job's: it counts against the deployment's circuit, and the job
    # may move on to another deployment of its group.
    deployment_fault = True

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.provider = provider
        self.status = status
        self.request_id = request_id
        self.retry_after = retry_after
        super().__init__(message)

    def to_record(self) -> dict:
        return {**super().to_record(), "provider": self.provider, "status": self.status,
                "request_id": self.request_id}


class TransportError(ProviderError):
    kind = "transport"
    retryable = True


class ProviderTimeout(TransportError):
    kind = "timeout"


class ProviderConnectionError(TransportError):
    kind = "connection"


class KeyUnavailable(ProviderError):
    """None of the provider's keys could be read (a variable unset, a file missing, Vault down); the
    message names the reference, never a value. Retryable: a secret store may be back soon."""

    kind = "key_unavailable"
    retryable = True


class MalformedResponse(ProviderError):
    """The provider answered 2xx but the body is not what its API promises."""

    kind = "malformed_response"
    retryable = True


class AnswerRejected(ProviderError):
    """The provider answered, but the answer failed a check (a local model's empty answer, a refusal,
    one cut off, JSON that does not parse): the job asks the next tier instead."""

    kind = "answer_rejected"


class AddressRefused(ProviderError):
    """The SSRF guard (``flowcloud.workers.core.ssrf``) refused a URL before anything was sent: its scheme,
    credentials in it, the address its host stands for, or a redirect. ``provider`` names who dialled
    (a provider, ``alert webhook``); ``rule`` says why. Permanent: the same URL is refused again."""

    kind = "address_refused"

    def __init__(self, *, provider: str, host: str, address: str | None, rule: str) -> None:
        self.host = host
        self.address = address
        self.rule = rule
        at = f" ({address})" if address and address != host else ""
        super().__init__(f"{provider}: refused to connect to {host}{at}: {rule}", provider=provider)

    def to_record(self) -> dict:
        return {**super().to_record(), "host": self.host, "address": self.address, "rule": self.rule}


class InputTooLong(ProviderError):
    """An input has more tokens than the model's window (an in-process encoder counts them exactly):
    a deployment with a larger window may take the job, this one never will."""

    kind = "input_too_long"


class ModelUnavailable(ProviderError):
    """An in-process model's files are not installed on this host; the message says how to install them."""

    kind = "model_unavailable"


class ProviderStatusError(ProviderError):
    kind = "status"


class BadRequest(ProviderStatusError):
    kind = "bad_request"
    deployment_fault = False


class AuthenticationFailed(ProviderStatusError):
    kind = "authentication"


class PermissionDenied(ProviderStatusError):
    kind = "permission_denied"


class NotFound(ProviderStatusError):
    kind = "not_found"


class UnprocessableRequest(ProviderStatusError):
    kind = "unprocessable"
    deployment_fault = False


class RequestTimeout(ProviderStatusError):
    kind = "request_timeout"
    retryable = True


class Conflict(ProviderStatusError):
    kind = "conflict"
    retryable = True


class RateLimited(ProviderStatusError):
    kind = "rate_limited"
    retryable = True


class ServerError(ProviderStatusError):
    kind = "server_error"
    retryable = True


STATUS_ERRORS: dict[int, type[ProviderStatusError]] = {
    400: BadRequest,
    401: AuthenticationFailed,
    403: PermissionDenied,
    404: NotFound,
    408: RequestTimeout,
    409: Conflict,
    422: UnprocessableRequest,
    429: RateLimited,
}


def status_error_class(status: int) -> type[ProviderStatusError]:
    """The error class for an HTTP error status; unknown 4xx are permanent, 5xx retryable."""
    if status in STATUS_ERRORS:
        return STATUS_ERRORS[status]
    return ServerError if status >= 500 else ProviderStatusError
