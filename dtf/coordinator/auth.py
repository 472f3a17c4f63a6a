"""API keys: creation, hashing, and who may do what.

A key looks like ``dtf_<key id>_<secret>``. Only its SHA-256 is kept (in the
journal, so every coordinator knows it); keys are long random tokens, so a
fast hash is enough and lookups stay O(1) by key id. The bootstrap admin key
comes from settings (``DTF_ADMIN_KEY`` or ``<data dir>/admin.key``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path

from dtf.core.records import ApiKeyRecord, Role
from dtf.errors import Forbidden, Unauthorized

PERMISSIONS: dict[str, frozenset[Role]] = {
    "read": frozenset({Role.ADMIN, Role.SUBMITTER, Role.VIEWER, Role.WORKER}),
    "submit": frozenset({Role.ADMIN, Role.SUBMITTER}),
    "work": frozenset({Role.ADMIN, Role.WORKER}),
    "admin": frozenset({Role.ADMIN}),
}


def new_key() -> tuple[str, str]:
    """A fresh ``(key id, key)`` pair."""
    key_id = secrets.token_hex(6)
    return key_id, f"dtf_{key_id}_{secrets.token_urlsafe(24)}"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_id_of(key: str) -> str | None:
    parts = key.split("_")
    return parts[1] if len(parts) >= 3 and parts[0] == "dtf" else None


class Authenticator:
    def __init__(self, admin_key: str, keys: Callable[[], Mapping[str, ApiKeyRecord]]) -> None:
        """``keys`` gives the current state's keys (a cluster node may swap its state)."""
        self._admin_hash = hash_key(admin_key)
        self._keys = keys

    def role_of(self, authorization: str | None) -> Role:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise Unauthorized(
                "missing API key: send 'Authorization: Bearer <key>' (set DTF_API_KEY for the CLI)"
            )
        key = authorization[7:].strip()
        digest = hash_key(key)
        if hmac.compare_digest(digest, self._admin_hash):
            return Role.ADMIN
        record = self._keys().get(key_id_of(key) or "")
        if record is None or not hmac.compare_digest(digest, record.key_hash):
            raise Unauthorized("invalid API key; create one with `dtf keys create --role ...`")
        return record.role

    def require(self, authorization: str | None, permission: str) -> Role:
        role = self.role_of(authorization)
        if role not in PERMISSIONS[permission]:
            raise Forbidden(f"a {role.value} key may not {permission}; use a key with more rights")
        return role


def load_or_create_admin_key(data_dir: Path, configured: str | None) -> tuple[str, Path | None]:
    """The admin key, and the file it was written to when it had to be created."""
    if configured:
        return configured, None
    path = data_dir / "admin.key"
    if path.exists():
        return path.read_text().strip(), None
    _, key = new_key()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key + "\n")
    return key, path
