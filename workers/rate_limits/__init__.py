"""Global rate limits: each deployment's requests and tokens per minute, shared by every worker on every host
(``limiter.py``), tightened by what the provider's own headers say (``headers.py``)."""

from flowcloud.workers.rate_limits.headers import ProviderLimits, read_headers
from flowcloud.workers.rate_limits.limiter import Limiter, limited, limited_deployments

__all__ = ["Limiter", "ProviderLimits", "limited", "limited_deployments", "read_headers"]
