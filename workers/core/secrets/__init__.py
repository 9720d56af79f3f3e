"""Provider keys by reference: where a key comes from (``env:``, ``file:``, ``vault:``), how it is
read again when its source changes, and the pool of a provider's keys that moves a call on from a
rejected key.

A key's value exists only in the worker's memory and in the request that carries it. Everything
else (Redis, records, logs, metrics, ``flowcloud config check``) names a key by its reference
(``env:OPENAI_KEY``) or by its fingerprint (8 hex digits of a keyed hash), never by its value.
"""

from flowcloud.workers.core.secrets.keys import Key, KeyPool, fingerprint
from flowcloud.workers.core.secrets.refs import SecretRef, parse_ref
from flowcloud.workers.core.secrets.sources import Sources, reload_all, share_reloads

__all__ = ["Key", "KeyPool", "SecretRef", "Sources", "fingerprint", "parse_ref", "reload_all", "share_reloads"]
