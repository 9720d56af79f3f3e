"""One connection to HashiCorp Vault (or OpenBao) through ``hvac``: KV version 2 reads, token or AppRole.

The address is ``vault.url``, else ``$VAULT_ADDR``. The token is the one ``vault.token`` refers to,
else ``$VAULT_TOKEN``; with ``vault.role_id`` and ``vault.secret_id`` (references themselves) it
logs in through AppRole instead, and again when Vault stops taking the token it was given. Vault's
own errors become ``KeyUnavailable`` naming the path, never a token or a value.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Any

import hvac
import hvac.exceptions
import requests

from flowcloud.workers.core.errors import KeyUnavailable
from flowcloud.workers.core.guard import redact, register_secret
from flowcloud.workers.core.secrets.refs import parse_ref

if TYPE_CHECKING:
    from flowcloud.workers.core.config_sections import VaultSettings

log = logging.getLogger(__name__)
# What a failed read may meet: Vault's answers (hvac's tree) and the transport's (requests').
READ_ERRORS = (hvac.exceptions.VaultError, requests.RequestException)
DENIED = (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized)
ERROR_TEXT_LIMIT = 200


class Vault:
    def __init__(self, settings: VaultSettings | None, provider: str) -> None:
        self.settings = settings
        self.provider = provider
        self.url = (settings.url if settings else None) or os.environ.get("VAULT_ADDR")
        self._client: hvac.Client | None = None
        self._lock = threading.Lock()

    def read(self, mount: str, path: str) -> tuple[dict[str, Any], int]:
        """The data and version number of the latest version of the KV v2 secret at ``mount/path``."""
        with self._lock:
            try:
                try:
                    return self._read(mount, path)
                except DENIED:
                    if not self._logs_in():
                        raise
                    self._client = None  # the AppRole token may have expired: log in again, once
                    return self._read(mount, path)
            except DENIED:
                raise self.unavailable(mount, path, "was refused: the token may not read it") from None
            except READ_ERRORS as exc:
                raise self.unavailable(mount, path, self.describe(exc)) from None

    def _read(self, mount: str, path: str) -> tuple[dict[str, Any], int]:
        try:
            answer = self.client().secrets.kv.v2.read_secret_version(path=path, mount_point=mount,
                                                                      raise_on_deleted_version=True)
            secret = answer["data"]
            return secret["data"], int(secret["metadata"]["version"])
        except (KeyError, TypeError, ValueError):
            raise self.unavailable(mount, path, "answered with no KV version 2 secret") from None

    def client(self) -> hvac.Client:
        if self._client is None:
            if not self.url:
                raise KeyUnavailable(f"{self.provider}: a vault: key needs vault.url or $VAULT_ADDR",
                                     provider=self.provider)
            settings = self.settings
            verify: bool | str = str(settings.ca_cert) if settings and settings.ca_cert else True
            client = hvac.Client(url=self.url, namespace=settings.namespace if settings else None, verify=verify,
                                 timeout=settings.timeout if settings else 5.0)
            if self._logs_in():
                response = client.auth.approle.login(role_id=self._ref_value("role_id"),
                                                     secret_id=self._ref_value("secret_id"),
                                                     mount_point=settings.approle_mount)  # type: ignore[union-attr]
                register_secret(response["auth"]["client_token"])
            else:
                client.token = self._token()
            self._client = client
        return self._client

    def _logs_in(self) -> bool:
        return bool(self.settings and self.settings.role_id)

    def _token(self) -> str | None:
        if self.settings and self.settings.token:
            return self._ref_value("token")
        token = os.environ.get("VAULT_TOKEN")
        register_secret(token)
        return token

    def _ref_value(self, setting: str) -> str:
        from flowcloud.workers.core.secrets.sources import Sources  # the token's own source: env: or file:

        ref = parse_ref(getattr(self.settings, setting))
        return Sources(self.provider).source(ref).read()

    def unavailable(self, mount: str, path: str, why: str) -> KeyUnavailable:
        return KeyUnavailable(f"{self.provider}: Vault's secret {mount}/{path} {why}", provider=self.provider)

    @staticmethod
    def describe(exc: Exception) -> str:
        if isinstance(exc, hvac.exceptions.InvalidPath):
            return "does not exist"
        if isinstance(exc, requests.RequestException):
            return f"could not be read: Vault did not answer ({type(exc).__name__})"
        text = " ".join(str(exc).split())
        return f"could not be read ({type(exc).__name__}: {redact(text)[:ERROR_TEXT_LIMIT]})"
