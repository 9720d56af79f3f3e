"""Reading a referenced secret, and reading it again when it changes.

An ``env:`` secret is read from the environment on every call. A ``file:`` secret is read again
when the file's inode, modification time or size changes (Kubernetes swaps a secret's files by
renaming a link), checked on every call by one ``stat``. A ``vault:`` secret is read again every
``vault.refresh_seconds``; if Vault cannot be reached then, the value read last is kept. Every
source also reads again on ``reload_all`` (SIGHUP in a worker) and when the provider refused the
value it keeps (``refused``): a call whose key was rotated in the store meanwhile gets the new one.
Calls refused together read once: the others find the new value kept.

Every value read is registered with ``flowcloud.workers.core.guard`` so no text that leaves the
process shows it. A source that cannot give a value raises ``KeyUnavailable``, whose message
names the reference, never a value.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping

from flowcloud.workers.core.errors import KeyUnavailable
from flowcloud.workers.core.guard import redact, register_secret
from flowcloud.workers.core.secrets.refs import SecretRef

if TYPE_CHECKING:
    from flowcloud.workers.core.config_sections import VaultSettings
    from flowcloud.workers.core.secrets.vault import Vault

log = logging.getLogger(__name__)
_reloads = 0
_shared_reloads: Any = None  # a counter in memory shared with forked processes, once share_reloads is called


def reload_all() -> None:
    """Make every source read its secret again on next use (the worker's SIGHUP), in this process and,
    after ``share_reloads``, in the processes forked from it. Safe in a signal handler."""
    global _reloads
    if _shared_reloads is not None:
        _shared_reloads.value += 1
    else:
        _reloads += 1


def share_reloads() -> None:
    """Let ``reload_all`` in this process reach the processes it forks later (a prefork pool's): called
    before they are forked, so no signal need be sent to them."""
    global _shared_reloads
    if _shared_reloads is None:
        from multiprocessing.sharedctypes import RawValue

        _shared_reloads = RawValue("Q", _reloads)


def reloads() -> int:
    return _shared_reloads.value if _shared_reloads is not None else _reloads


class Source:
    """One secret's source; ``read`` gives its current value."""

    def __init__(self, ref: SecretRef, provider: str) -> None:
        self.ref = ref
        self.provider = provider

    def read(self, refused: str | None = None) -> str:
        """The secret's value; read from its store again when ``refused`` (a value the provider just
        refused) is the one kept, so a key rotated in the store is picked up by the call it failed."""
        raise NotImplementedError

    def unavailable(self, why: str) -> KeyUnavailable:
        return KeyUnavailable(f"{self.provider}: the key {self.ref} {why}", provider=self.provider)

    def checked(self, value: str) -> str:
        value = value.strip()
        if not value:
            raise self.unavailable("is empty")
        register_secret(value)
        return value


class EnvSource(Source):
    def __init__(self, ref: SecretRef, provider: str, env: Mapping[str, str] = os.environ) -> None:
        super().__init__(ref, provider)
        self.env = env

    def read(self, refused: str | None = None) -> str:
        value = self.env.get(self.ref.target)
        if value is None:
            raise self.unavailable("is not set in the environment")
        return self.checked(value)


class CachedSource(Source):
    """A source whose value is kept between calls and read again when ``stale`` says so."""

    def __init__(self, ref: SecretRef, provider: str, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(ref, provider)
        self.clock = clock
        self._value: str | None = None
        self._generation = reloads()
        self._lock = threading.Lock()

    def read(self, refused: str | None = None) -> str:
        if self._value is not None and self._value != refused and not self._due():
            return self._value
        with self._lock:  # one thread reads; the others then find its value fresh
            if self._value is None or self._value == refused or self._due():
                generation = reloads()
                # Marked fresh only once read: meanwhile the other threads wait here, not use the old value.
                self._value = self.refreshed(self._value)
                self._generation = generation
            return self._value

    def _due(self) -> bool:
        return self._generation != reloads() or self.stale()

    def stale(self) -> bool:
        raise NotImplementedError

    def refreshed(self, previous: str | None) -> str:
        raise NotImplementedError


class FileSource(CachedSource):
    def __init__(self, ref: SecretRef, provider: str) -> None:
        super().__init__(ref, provider)
        self._stamp: tuple[int, int, int] | None = None

    def stat(self) -> tuple[int, int, int]:
        try:
            st = os.stat(self.ref.target)
        except OSError as exc:
            raise self.unavailable(f"cannot be read ({type(exc).__name__})") from None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def stale(self) -> bool:
        return self.stat() != self._stamp

    def refreshed(self, previous: str | None) -> str:
        stamp = self.stat()
        try:
            with open(self.ref.target, encoding="utf-8") as secret:
                value = self.checked(secret.read())
        except (OSError, UnicodeDecodeError) as exc:
            raise self.unavailable(f"cannot be read ({type(exc).__name__})") from None
        self._stamp = stamp
        if previous is not None and value != previous:
            log.info("%s: the key %s changed; calls use the new one", self.provider, self.ref)
        return value


class VaultSource(CachedSource):
    def __init__(self, ref: SecretRef, provider: str, vault: Vault, refresh_seconds: float) -> None:
        super().__init__(ref, provider)
        self.vault = vault
        self.refresh_seconds = refresh_seconds
        self.version: int | None = None
        self._checked_at = -float("inf")

    def stale(self) -> bool:
        return self.clock() - self._checked_at >= self.refresh_seconds

    def refreshed(self, previous: str | None) -> str:
        try:
            data, version = self.vault.read(self.ref.mount, self.ref.path)
        except KeyUnavailable as exc:
            if previous is None:
                raise
            log.warning("%s: keeping the key %s read last: %s", self.provider, self.ref, redact(str(exc)))
            return previous
        finally:
            self._checked_at = self.clock()
        if not isinstance(data.get(self.ref.field), str):
            raise self.unavailable(f"names no text field {self.ref.field!r} in version {version}")
        value = self.checked(data[self.ref.field])
        if self.version is not None and version != self.version:
            log.info("%s: the key %s moved to version %s; calls use it", self.provider, self.ref, version)
        self.version = version
        return value


class Sources:
    """Builds the source of each reference; the ``vault:`` ones share one Vault connection."""

    def __init__(self, provider: str, vault: VaultSettings | None = None) -> None:
        self.provider = provider
        self.vault_settings = vault
        self._vault: Vault | None = None

    def source(self, ref: SecretRef) -> Source:
        if ref.scheme == "env":
            return EnvSource(ref, self.provider)
        if ref.scheme == "file":
            return FileSource(ref, self.provider)
        return VaultSource(ref, self.provider, self.vault(), self.refresh_seconds)

    @property
    def refresh_seconds(self) -> float:
        return self.vault_settings.refresh_seconds if self.vault_settings is not None else 30.0

    def vault(self) -> Vault:
        if self._vault is None:
            from flowcloud.workers.core.secrets.vault import Vault  # hvac only where a key is in Vault

            self._vault = Vault(self.vault_settings, self.provider)
        return self._vault
