"""The load shedder: `limit` requests served at once, the next wait for a slot (bounded in time
and in number), and only then 503 + Retry-After; /healthz never waits."""

from __future__ import annotations

import asyncio

import httpx
from starlette.types import Receive, Scope, Send

from app.middleware import LoadShedder


def slow_app(seconds: float):  # type: ignore[no-untyped-def]
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await asyncio.sleep(seconds)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
    return app


async def _burst(shedder: LoadShedder, n: int, path: str = "/v1/x") -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=shedder)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        return list(await asyncio.gather(*(c.get(path) for _ in range(n))))


def test_requests_beyond_the_limit_wait_for_a_slot_and_are_served() -> None:
    shedder = LoadShedder(slow_app(0.05), limit=2, retry_after=3, wait_seconds=5, max_waiting=100)
    responses = asyncio.run(_burst(shedder, 20))
    assert [r.status_code for r in responses] == [200] * 20 and shedder.shed == 0


def test_a_full_waiting_room_or_a_long_wait_gets_503_with_retry_after() -> None:
    full = LoadShedder(slow_app(0.2), limit=1, retry_after=3, wait_seconds=5, max_waiting=2)
    codes = sorted(r.status_code for r in asyncio.run(_burst(full, 6)))
    assert codes == [200, 200, 200, 503, 503, 503] and full.shed == 3
    slow = LoadShedder(slow_app(0.5), limit=1, retry_after=3, wait_seconds=0.1, max_waiting=100)
    responses = asyncio.run(_burst(slow, 3))
    refused = [r for r in responses if r.status_code == 503]
    assert len(refused) == 2 and all(r.headers["retry-after"] == "3" for r in refused)
    assert refused[0].headers["content-type"].startswith("application/problem+json")


def test_healthz_is_never_held_back() -> None:
    shedder = LoadShedder(slow_app(0.01), limit=1, retry_after=3, wait_seconds=0, max_waiting=0)
    assert all(r.status_code == 200 for r in asyncio.run(_burst(shedder, 5, "/healthz")))
