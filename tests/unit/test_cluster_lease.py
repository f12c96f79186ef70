"""The lease of a cluster job against a real redis-server: one holder at a time, growing tokens,
and a holder cut off from Redis gives up before anyone else can take over."""
from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from clustersupport import Proxy, RedisServer
from pyngx.conf.model import ClusterConf
from pyngx.runtime.cluster import Member

LEASE = 0.4


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def member(url: str, node: str, tmp_path: Path) -> Member:
    return Member(ClusterConf(url, name="t", node=node, lease=LEASE), str(tmp_path), False)


async def until(pred: object, timeout: float, watch: object = None) -> float:
    """Seconds until PRED() holds; WATCH() is checked at every step (an invariant)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not pred():  # type: ignore[operator]
        if watch is not None:
            watch()  # type: ignore[operator]
        if loop.time() - start > timeout:
            raise AssertionError("timed out")
        await asyncio.sleep(0.002)
    return loop.time() - start


def test_one_holder_growing_tokens_and_hand_back(redis_server: RedisServer, tmp_path: Path) -> None:
    async def main() -> None:
        ma, mb = member(redis_server.url, "a", tmp_path), member(redis_server.url, "b", tmp_path)
        a, b = ma.lease("job"), mb.lease("job")
        a.start()
        await until(a.valid, 2)
        b.start()
        one_holder = lambda: None if not (a.valid() and b.valid()) else pytest.fail("two holders")  # noqa: E731
        for _ in range(3):  # a renews, b never gets it
            await asyncio.sleep(LEASE)
            assert a.valid() and not b.valid()
        first = a.token
        await a.release()  # given back: b takes it at its next try, well before the lease would run out
        took = await until(b.valid, LEASE + 0.5, one_holder)
        assert b.token is not None and first is not None and b.token > first
        assert took <= LEASE + 0.1
        await b.release()
        await ma.aclose()
        await mb.aclose()
    asyncio.run(main())


@pytest.mark.parametrize("partition", ["cut", "freeze"])
def test_a_holder_cut_off_stops_before_another_can_take_over(redis_server: RedisServer, tmp_path: Path,
                                                             partition: str) -> None:
    proxy = Proxy(redis_server.port)

    async def main() -> None:
        ma = member(f"redis://127.0.0.1:{proxy.port}/0", "a", tmp_path)
        mb = member(redis_server.url, "b", tmp_path)
        a, b = ma.lease("job"), mb.lease("job")
        a.start()
        await until(a.valid, 2)
        b.start()
        await asyncio.sleep(LEASE)
        getattr(proxy, partition)()
        one_holder = lambda: None if not (a.valid() and b.valid()) else pytest.fail("two holders")  # noqa: E731
        lost = await until(lambda: not a.valid(), LEASE, one_holder)
        assert lost <= LEASE * 0.9
        await until(b.valid, LEASE * 2 + 0.5, one_holder)
        assert not a.valid()
        a.stop()
        await b.release()
        await ma.aclose()
        await mb.aclose()
    try:
        asyncio.run(main())
    finally:
        proxy.close()
