"""Secret references as the configuration writes them, parsed and checked; nothing here reads a secret.

``env:NAME`` an environment variable; ``file:/path`` a file (Docker and Kubernetes secrets), its
content stripped of surrounding whitespace; ``vault:mount/path#field`` a field of a HashiCorp Vault
(or OpenBao) KV version 2 secret. A value that is none of these is refused: a key written into the
configuration itself would travel wherever the file does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
VAULT_TARGET = re.compile(r"^(?P<mount>[^/#\s]+)/(?P<path>[^#\s]*[^/#\s])#(?P<field>[^#\s]+)$")
FORMS = "env:NAME, file:/path or vault:mount/path#field"


@dataclass(frozen=True)
class SecretRef:
    """Where one secret is: ``scheme`` (env, file, vault) and what names it there."""

    scheme: str
    target: str  # the variable name, the file's path, or vault's mount/path
    field: str | None = None  # vault only: the field of the secret holding the value

    def __str__(self) -> str:
        return f"{self.scheme}:{self.target}" + (f"#{self.field}" if self.field else "")

    @property
    def mount(self) -> str:
        return self.target.partition("/")[0]

    @property
    def path(self) -> str:
        return self.target.partition("/")[2]


def parse_ref(text: str) -> SecretRef:
    """``text`` as a ``SecretRef``; ``ValueError`` saying which form it misses. The error never quotes
    ``text``, which may be a key pasted where its reference belongs."""
    scheme, sep, target = text.partition(":")
    if not sep or scheme not in ("env", "file", "vault"):
        raise ValueError(f"give a reference ({FORMS}), not the key itself")
    if scheme == "env" and not ENV_NAME.match(target):
        raise ValueError("an env reference needs the NAME of an environment variable (letters, digits, _)")
    if scheme == "file" and not target.startswith("/"):
        raise ValueError("a file reference needs an absolute path, e.g. file:/run/secrets/openai_key")
    if scheme == "vault":
        match = VAULT_TARGET.match(target)
        if not match:
            raise ValueError("a vault reference needs mount/path#field, e.g. vault:secret/flowcloud/openai#api_key")
        return SecretRef("vault", f"{match['mount']}/{match['path']}", match["field"])
    return SecretRef(scheme, target)
