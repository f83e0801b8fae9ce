"""`python -m worker`: an RQ worker on queue `gpu` and `cpu` where CUDA exists, `cpu` otherwise.

CUDA is detected in a throw-away subprocess, so this (parent) process never initialises it and
forking work horses stays safe. torch and the science modules are imported (not initialised) here
once, so each forked horse starts without paying for the imports.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time
import uuid

from core.queue import QUEUE_NAMES, redis_connection
from core.settings import get_settings

log = logging.getLogger("worker")
REDIS_WAIT_SECONDS = 30.0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m worker", description=__doc__)
    p.add_argument("--queues", nargs="+", choices=QUEUE_NAMES,
                   help="queues to listen on (default: by the devices that exist)")
    p.add_argument("--name", help="worker name (default host.pid.random)")
    p.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    p.add_argument("--max-jobs", type=int, default=None, help="exit after this many jobs")
    p.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    return p.parse_args(argv)


def _preload(torch_threads: int = 0) -> None:
    """Import torch and the science code in the parent (no CUDA initialisation); set torch's CPU
    threads (inherited by the forked horses) when `torch_threads` > 0."""
    import torch

    if torch_threads > 0:
        torch.set_num_threads(torch_threads)

    import models.data  # noqa: F401
    import models.entropy.estimators  # noqa: F401
    import models.networks  # noqa: F401
    import worker.jobs  # noqa: F401  (imports every job body)


def _wait_for_redis(connection: object, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            connection.ping()  # type: ignore[attr-defined]
            return
        except Exception as exc:  # noqa: BLE001
            if time.monotonic() > deadline:
                raise SystemExit(f"worker: Redis does not answer: {exc}") from None
            time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from worker.devices import worker_device_label, worker_queues
    from worker.service_worker import ServiceWorker

    settings = get_settings()
    queues = args.queues or worker_queues()
    name = args.name or f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
    connection = redis_connection()
    _wait_for_redis(connection, REDIS_WAIT_SECONDS)
    try:
        _preload(settings.worker_torch_threads)
    except ImportError as exc:  # a science module missing: jobs will report it, keep serving
        log.warning("could not preload the science modules: %s", exc)
    log.info("worker %s on queues %s, device %s (redis %s, database %s)", name, ",".join(queues),
             worker_device_label(queues),
             settings.resolved_redis_url, settings.resolved_database_url.split("@")[-1])
    device = worker_device_label(queues)
    w = ServiceWorker(queues, connection=connection, name=name, device_label=device)
    w.work(burst=args.burst, max_jobs=args.max_jobs, logging_level=args.log_level.upper())
    return 0


if __name__ == "__main__":
    sys.exit(main())
