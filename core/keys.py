"""API keys and the shared request dependencies (`SessionDep`, `SettingsDep`, `CurrentOwner`).

Keys are sent as `Authorization: Bearer <key>`. Only the sha256 hex digest of a key is stored
(`ApiKey.key_hash`); the digest of the presented key is compared with `hmac.compare_digest`.
A missing, malformed, unknown or revoked key gets 401 with `WWW-Authenticate: Bearer`.

The database session of a request commits after the route function returns and before the
response is sent (so a client that reads right after a 201/202 sees the row), and rolls back if
the route raises.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db import session_scope
from app.errors import ProblemError
from app.settings import Settings, get_settings
from app.tables import ApiKey, Owner

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


# ---- dependencies ----
def get_app_settings(request: Request) -> Settings:
    """The settings the app was created with (tests pass their own to `create_app`)."""
    settings = getattr(request.app.state, "settings", None)
    return settings if isinstance(settings, Settings) else get_settings()


def get_session(request: Request) -> Iterator[Session]:
    """One session per request: commit on success, roll back on error."""
    factory: sessionmaker[Session] | None = getattr(request.app.state, "session_factory", None)
    with session_scope(factory) as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description=(
        "API key from `python -m app.cli create-key NAME`, sent as `Authorization: Bearer <key>`."
    ),
)


def _unauthorized(detail: str) -> ProblemError:
    return ProblemError(401, "Unauthorized", detail,
                        headers={"WWW-Authenticate": 'Bearer realm="neural-entropy"'})


def get_current_owner(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Owner:
    """The owner of the presented API key; 401 + WWW-Authenticate otherwise."""
    if credentials is None or not credentials.credentials:
        raise _unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    if credentials.scheme.lower() != "bearer":
        raise _unauthorized("the Authorization scheme must be Bearer")
    owner = owner_for_key(session, credentials.credentials.strip())
    if owner is None:
        raise _unauthorized("invalid or revoked API key")
    return owner


CurrentOwner = Annotated[Owner, Depends(get_current_owner)]
