"""API keys: creation and lookup.

Keys are sent as `Authorization: Bearer <key>` (checked in `app.deps`). Only the sha256 hex digest
of a key is stored (`ApiKey.key_hash`); the digest of the presented key is compared with
`hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.tables import ApiKey, Owner

KEY_PREFIX = "ne_"  # every key starts with this, so leaked keys are easy to grep for
KEY_ENTROPY_BYTES = 32
SHOWN_PREFIX_CHARS = 12  # ApiKey.prefix: the first characters, to tell keys apart


def hash_key(key: str) -> str:
    """sha256 hex digest of a plaintext key (what the database stores)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(KEY_ENTROPY_BYTES)


def create_api_key(session: Session, name: str, owner: Owner | None = None) -> tuple[Owner, str]:
    """Create an owner named `name` (or add a key to `owner`) and return it with the plaintext key.

    The plaintext is returned once and never stored. The caller commits.
    """
    if owner is None:
        owner = Owner(name=name)
        session.add(owner)
        session.flush()
    key = generate_key()
    session.add(ApiKey(owner_id=owner.id, key_hash=hash_key(key), prefix=key[:SHOWN_PREFIX_CHARS]))
    session.flush()
    return owner, key


def owner_for_key(session: Session, key: str) -> Owner | None:
    """The owner of an active key, or None. The digest comparison is constant-time."""
    digest = hash_key(key)
    row = session.scalars(select(ApiKey).where(ApiKey.key_hash == digest)).first()
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.key_hash.encode("ascii"), digest.encode("ascii")):
        return None
    return session.get(Owner, row.owner_id)
