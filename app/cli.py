"""Command line: API keys and migrations.

- `create-key NAME [--output FILE]` creates an owner NAME (non-empty, unique) with a new API key
  and prints the key alone on one line (only its sha256 is stored). `--output` also writes it to
  FILE (mode 600). A name that is empty or already taken exits with status 2 and a message on
  stderr.
- `list-keys` prints one line per key: prefix, owner name, created, `active` or `revoked <when>`
  (never a key itself: only its first characters are stored in the clear).
- `revoke-key PREFIX` revokes the key whose shown prefix (from `list-keys`) is PREFIX; its next
  request gets 401.
- `rotate-key NAME [--output FILE]` revokes every active key of owner NAME and prints a new key
  alone on one line (the owner, and everything it owns, stay).
- `migrate [--url URL]` upgrades the database (DATABASE_URL, default SQLite under DATA_DIR) to the
  newest Alembic revision.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from core.db import session_scope
from core.keys import create_api_key
from core.migrations import migrate
from core.tables import ApiKey, Owner, utcnow


class CliError(Exception):
    """A refused command: printed to stderr, exit status 2."""


def _write_key(key: str, output: Path | None) -> None:
    if output is None:
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    os.chmod(output, 0o600)


def _clean_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise CliError("the owner name must not be empty")
    if len(name) > 200 or "\x00" in name:
        raise CliError("the owner name must be at most 200 characters, without NUL")
    return name


def create_key(name: str, output: Path | None = None) -> str:
    """A new owner `name` (unique, non-empty) with a fresh key; returns the plaintext key."""
    name = _clean_name(name)
    taken = CliError(f"an owner named {name!r} exists already (use rotate-key to give it a new "
                     "key)")
    try:
        with session_scope() as session:
            if session.scalar(select(Owner.id).where(Owner.name == name)) is not None:
                raise taken
            _, key = create_api_key(session, name)
    except IntegrityError:  # created concurrently: the unique index on owners.name
        raise taken from None
    _write_key(key, output)
    return key


def list_keys() -> list[str]:
    """One line per key, oldest first: prefix, owner, created, status."""
    with session_scope() as session:
        rows = session.execute(
            select(ApiKey.prefix, Owner.name, ApiKey.created_at, ApiKey.revoked_at)
            .join(Owner, Owner.id == ApiKey.owner_id)
            .order_by(ApiKey.created_at, ApiKey.id)).all()
    return [f"{prefix}\t{name}\t{created.isoformat(timespec='seconds')}\t"
            + ("active" if revoked is None else f"revoked {revoked.isoformat(timespec='seconds')}")
            for prefix, name, created, revoked in rows]


def revoke_key(prefix: str) -> None:
    """Revoke the one active key shown as `prefix`."""
    prefix = prefix.strip()
    with session_scope() as session:
        keys = session.scalars(select(ApiKey).where(ApiKey.prefix == prefix,
                                                    ApiKey.revoked_at.is_(None))).all()
        if not keys:
            raise CliError(f"no active key with prefix {prefix!r} (see list-keys)")
        if len(keys) > 1:
            raise CliError(f"{len(keys)} active keys share the prefix {prefix!r}")
        keys[0].revoked_at = utcnow()


def rotate_key(name: str, output: Path | None = None) -> str:
    """Revoke every active key of owner `name` and return a new one."""
    name = _clean_name(name)
    with session_scope() as session:
        owner = session.scalars(select(Owner).where(Owner.name == name)).first()
        if owner is None:
            raise CliError(f"no owner named {name!r} (use create-key)")
        session.execute(update(ApiKey).where(ApiKey.owner_id == owner.id,
                                             ApiKey.revoked_at.is_(None))
                        .values(revoked_at=utcnow()))
        _, key = create_api_key(session, name, owner)
    _write_key(key, output)
    return key


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.cli", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_key = sub.add_parser("create-key", help="create an owner with a new API key; print the key")
    p_key.add_argument("name", help="owner name (non-empty, unique)")
    p_key.add_argument("--output", type=Path, help="also write the key to this file (mode 600)")
    sub.add_parser("list-keys", help="list keys: prefix, owner, created, status")
    p_rev = sub.add_parser("revoke-key", help="revoke the key with this prefix (see list-keys)")
    p_rev.add_argument("prefix", help="the key's prefix as list-keys shows it")
    p_rot = sub.add_parser("rotate-key", help="revoke an owner's keys and print a new one")
    p_rot.add_argument("name", help="owner name")
    p_rot.add_argument("--output", type=Path, help="also write the key to this file (mode 600)")
    p_mig = sub.add_parser("migrate", help="upgrade the database to the newest revision")
    p_mig.add_argument("--url", help="database URL (default: DATABASE_URL / SQLite in DATA_DIR)")
    args = parser.parse_args(argv)
    try:
        if args.command == "migrate":
            migrate(args.url)
        elif args.command == "list-keys":
            for line in list_keys():
                print(line)
        elif args.command == "revoke-key":
            revoke_key(args.prefix)
        elif args.command == "rotate-key":
            print(rotate_key(args.name, args.output))
        else:
            print(create_key(args.name, args.output))
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
