"""A work horse is never forked while a maintenance thread of the worker parent is mid-pass: the
thread's pass and the fork exclude each other (`worker.service_worker._fork_gate`), and a forked
child starts with a free gate of its own."""

from __future__ import annotations

import os
import threading
import time

from worker import service_worker
from worker.service_worker import PeriodicTask


def test_a_maintenance_pass_holds_the_fork_gate_until_it_ends() -> None:
    inside, leave = threading.Event(), threading.Event()

    def action() -> None:
        inside.set()
        leave.wait(5)

    task = PeriodicTask("gate-test", 60.0, action).start()
    try:
        assert inside.wait(5)
        assert not service_worker._fork_gate.acquire(blocking=False)  # a fork would wait here
        leave.set()
        deadline = time.monotonic() + 5
        while not service_worker._fork_gate.acquire(blocking=False):
            assert time.monotonic() < deadline, "the pass never released the gate"
            time.sleep(0.01)
        service_worker._fork_gate.release()
    finally:
        leave.set()
        task.stop()


def test_a_forked_child_gets_a_free_gate_even_if_the_parent_held_it() -> None:
    with service_worker._fork_gate:
        pid = os.fork()
        if pid == 0:  # the child: its gate is a fresh lock
            os._exit(0 if service_worker._fork_gate.acquire(blocking=False) else 1)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
