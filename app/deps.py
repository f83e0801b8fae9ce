"""FastAPI dependencies of the routes, as `Annotated` aliases: `SettingsDep`, `SessionDep`,
`CurrentOwner`, `ArtifactStoreDep`.

The database session of a request commits after the route function returns and before the
response is sent (so a client that reads right after a 201/202 sees the row), and rolls back if
the route raises. A missing, malformed, unknown or revoked API key gets 401 with
`WWW-Authenticate: Bearer`.

No request holds a database connection while it waits: the key lookup ends its transaction
(`session.commit()` hands the connection back to the pool) before the route is scheduled on a
worker thread, and the route takes a connection again only when it first queries. Under load a
request therefore waits for a thread *or* a connection, never for one while holding the other.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from app.errors import ProblemError
from core.artifacts import ArtifactStore, get_artifact_store
from core.db import session_scope
from core.keys import owner_for_key
from core.settings import Settings, get_settings
from core.tables import Owner


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
    session.commit()  # give the connection back before the route waits for a thread
    if owner is None:
        raise _unauthorized("invalid or revoked API key")
    return owner


CurrentOwner = Annotated[Owner, Depends(get_current_owner)]


def get_request_artifact_store(request: Request) -> ArtifactStore:
    """FastAPI dependency: the store of the app serving the request (its settings' ARTIFACT_DIR)."""
    store = getattr(request.app.state, "artifacts", None)
    return store if isinstance(store, ArtifactStore) else get_artifact_store()


ArtifactStoreDep = Annotated[ArtifactStore, Depends(get_request_artifact_store)]
