"""Command line: `python -m app.cli create-key NAME` and `python -m app.cli migrate`.

- `create-key NAME [--output FILE]` creates an owner NAME with a new API key and prints the key
  alone on one line (only its sha256 is stored). `--output` also writes it to FILE (mode 600).
- `migrate [--url URL]` upgrades the database (DATABASE_URL, default SQLite under DATA_DIR) to the
  newest Alembic revision.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from core.db import session_scope
from core.keys import create_api_key
from core.migrations import migrate


def create_key(name: str, output: Path | None = None) -> str:
    """A new owner `name` with a fresh key; returns the plaintext key."""
    with session_scope() as session:
        _, key = create_api_key(session, name)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
        os.chmod(output, 0o600)
    return key


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.cli", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_key = sub.add_parser("create-key", help="create an owner with a new API key; print the key")
    p_key.add_argument("name", help="owner name")
    p_key.add_argument("--output", type=Path, help="also write the key to this file (mode 600)")
    p_mig = sub.add_parser("migrate", help="upgrade the database to the newest revision")
    p_mig.add_argument("--url", help="database URL (default: DATABASE_URL / SQLite in DATA_DIR)")
    args = parser.parse_args(argv)
    if args.command == "migrate":
        migrate(args.url)
        return 0
    print(create_key(args.name, args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
