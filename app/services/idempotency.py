"""Safe retries of POSTs: the `Idempotency-Key` header.

A client sends `Idempotency-Key: <up to 200 printable ASCII characters>` with a POST. The first
request that succeeds stores (owner, key) -> (endpoint, body fingerprint, resource id, status)
in the same commit as the resource it created. A retry with the same key by the same owner gets
the same resource and status code again (with `Idempotent-Replayed: true`) and creates nothing;
the same key with a different endpoint or a different JSON body is refused with 422. Two
concurrent first requests with one key: the unique (owner, key) row lets one commit; the other
rolls back everything it added and answers as a replay of the winner.

The fingerprint of a JSON request is the sha256 of its validated body; of a multipart upload,
the sha256 of its form fields and its file's sha256. A key whose resource has since been deleted
is forgotten, and the request creates a new one.
"""

from __future__ import annotations

import hashlib
import json
import string
from typing import Annotated, TypeVar

from fastapi import Header
from pydantic import BaseModel
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.errors import ProblemError
from core.tables import IdempotencyKey, Owner

MAX_KEY_LENGTH = 200
_ALLOWED = frozenset(string.ascii_letters + string.digits + string.punctuation + " ")
REPLAY_HEADER = "Idempotent-Replayed"

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(alias="Idempotency-Key", max_length=MAX_KEY_LENGTH,
           description="Makes the POST safe to retry: a retry with the same key returns the "
           "first result (same id, same status) and creates nothing. Up to 200 printable ASCII "
           "characters; reusing a key for a different request is a 422."),
]


def check_key(key: str | None) -> str | None:
    if key is None:
        return None
    key = key.strip()
    if not key or any(c not in _ALLOWED for c in key):
        raise ProblemError(422, "Unprocessable Content",
                           "Idempotency-Key must be 1..200 printable ASCII characters",
                           "Idempotency-Key")
    return key


def fingerprint(body: BaseModel | bytes | None) -> str | None:
    """sha256 of the validated body (canonical JSON) or of raw bytes; None for no body."""
    if body is None:
        return None
    raw = body if isinstance(body, bytes) else body.model_dump_json().encode()
    return hashlib.sha256(raw).hexdigest()


def find(session: Session, owner: Owner, key: str | None, endpoint: str,
         fp: str | None) -> IdempotencyKey | None:
    """The stored first answer for `key`, or None. 422 when the key was used for another
    endpoint or another body."""
    if key is None:
        return None
    row = session.get(IdempotencyKey, (owner.id, key))
    if row is None:
        return None
    if row.endpoint != endpoint or row.fingerprint != fp:
        raise ProblemError(
            422, "Unprocessable Content",
            f"Idempotency-Key {key!r} was already used for a different request "
            f"({row.endpoint}); use a new key", "Idempotency-Key")
    return row


Row = TypeVar("Row")


def prior_resource(session: Session, owner: Owner, key: str | None, endpoint: str,
                   fp: str | None, table: type[Row]) -> Row | None:
    """The resource (a row of `table`) the first request with `key` created, or None (no such
    request, or its resource is gone: then the key is forgotten)."""
    row = find(session, owner, key, endpoint, fp)
    if row is None:
        return None
    resource = session.get(table, row.resource_id)
    if resource is None:
        forget(session, owner, key)
        session.flush()
    return resource


def upload_fingerprint(fields: dict[str, str], file_sha256: str | None) -> str:
    """The fingerprint of a multipart upload: its form fields and its file's sha256."""
    fp = fingerprint(json.dumps({"fields": fields, "file": file_sha256}, sort_keys=True).encode())
    assert fp is not None  # bytes always have one
    return fp


def remember(session: Session, owner: Owner, key: str | None, endpoint: str, fp: str | None,
             resource_id: str, status_code: int) -> None:
    """Add the (owner, key) row to the session; it commits with the resource."""
    if key is not None:
        session.add(IdempotencyKey(owner_id=owner.id, key=key, endpoint=endpoint,
                                   fingerprint=fp, resource_id=resource_id,
                                   status_code=status_code))


def forget(session: Session, owner: Owner, key: str | None) -> None:
    """Remove the row again (the resource it pointed to was removed: a failed enqueue)."""
    if key is not None:
        session.execute(delete(IdempotencyKey).where(IdempotencyKey.owner_id == owner.id,
                                                     IdempotencyKey.key == key))


def winner_after_conflict(session: Session, owner: Owner, key: str | None,
                          exc: IntegrityError) -> IdempotencyKey:
    """After a commit failed on the unique (owner, key): roll back and return the row of the
    request that won; re-raise when the conflict was about something else."""
    session.rollback()
    if key is not None:
        row = session.scalars(select(IdempotencyKey).where(
            IdempotencyKey.owner_id == owner.id, IdempotencyKey.key == key)).first()
        if row is not None:
            return row
    raise exc


def commit_or_replay(session: Session, owner: Owner, key: str | None, endpoint: str,
                     fp: str | None, resource_id: str, status_code: int) -> tuple[str, bool]:
    """Remember the key with the new resource and commit; when a concurrent request with the
    same key committed first, roll this one back and return the winner's resource id.
    Returns (resource id, replayed)."""
    remember(session, owner, key, endpoint, fp, resource_id, status_code)
    try:
        session.commit()
    except IntegrityError as exc:
        return winner_after_conflict(session, owner, key, exc).resource_id, True
    return resource_id, False
