"""`python -m worker.healthcheck`: exit 0 when an RQ worker of this host is registered in Redis
with a fresh heartbeat (the compose file's worker health check), 1 otherwise."""

from __future__ import annotations

import socket
import sys
from datetime import timedelta

from rq.worker import Worker

from core.queue import redis_connection
from core.tables import utcnow

STALE_AFTER = timedelta(minutes=3)


def main() -> int:
    try:
        workers = Worker.all(connection=redis_connection())
    except Exception as exc:  # noqa: BLE001
        print(f"unhealthy: Redis: {exc}")
        return 1
    host = socket.gethostname()
    now = utcnow()
    for w in workers:
        beat = w.last_heartbeat
        if w.hostname == host and beat is not None:
            beat = beat if beat.tzinfo else beat.replace(tzinfo=now.tzinfo)
            if now - beat < STALE_AFTER:
                print(f"healthy: {w.name} ({w.get_state()})")
                return 0
    print(f"unhealthy: no live worker registered from {host}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
