"""aiormq (the asyncio client under aio-pika) against a broker: the shapes
of aiormq's own test suite that failed against warren and pass against
RabbitMQ 3.10. Prints one line per scenario, "ok NAME" or "FAIL NAME: why".
Usage: aiormq_compat.py PORT"""

import asyncio
import sys
import traceback

import aiormq
from aiormq.exceptions import ChannelNotFoundEntity

URL = f"amqp://guest:guest@127.0.0.1:{sys.argv[1]}/"
T = 10  # seconds before a scenario counts as hung


async def close_with_error():
    """connection.close(exc) waits for the broker's close-ok: the close
    result is the given exception (or, as aiormq races its reader with
    RabbitMQ too, a clean close), never a lost connection."""
    outcomes = {}
    for _ in range(30):
        conn = await aiormq.connect(URL)
        await conn.channel()
        await conn.close(RuntimeError("closed by the test"))
        try:
            await asyncio.wait_for(conn.closing, T)
            outcome = "clean"
        except BaseException as e:  # noqa: BLE001
            outcome = repr(e)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    mine = "RuntimeError('closed by the test')"
    assert set(outcomes) <= {mine, "clean"}, outcomes


async def channel_65535():
    """A channel number above channel_max is fine; a bad bind on it is a
    normal 404."""
    conn = await aiormq.connect(URL)
    try:
        ch = await conn.channel(65535)
        try:
            await ch.queue_bind("aiormq-no-such-queue", "amq.direct", "x")
        except ChannelNotFoundEntity:
            pass
        else:
            raise AssertionError("bind to a missing queue succeeded")
    finally:
        await conn.close()


async def nowait_then_qos():
    """nowait declare and bind, then a synchronous basic.qos: not hung."""
    conn = await aiormq.connect(URL)
    try:
        ch = await conn.channel()
        q = "aiormq-nowait"
        await ch.queue_declare(q, auto_delete=True, nowait=True)
        await ch.queue_bind(q, "amq.direct", q, nowait=True)
        await asyncio.wait_for(ch.basic_qos(prefetch_count=10), T)
        await ch.queue_delete(q)
    finally:
        await conn.close()


async def if_empty_after_get():
    """aio-pika's shape: basic.get without auto-ack, then delete with
    if_empty: deleted (unacked messages do not count)."""
    conn = await aiormq.connect(URL)
    try:
        ch = await conn.channel()
        q = (await ch.queue_declare("aiormq-ifempty")).queue
        await ch.basic_publish(b"x", routing_key=q)
        msg = await ch.basic_get(q, no_ack=False)
        assert msg.body == b"x", msg
        await asyncio.wait_for(ch.queue_delete(q, if_empty=True), T)
    finally:
        await conn.close()


async def pipelined_declares():
    """Several declares in flight at once on one channel."""
    conn = await aiormq.connect(URL)
    try:
        ch = await conn.channel()
        names = [f"aiormq-pipe-{i}" for i in range(5)]
        oks = await asyncio.wait_for(
            asyncio.gather(*(ch.queue_declare(n, auto_delete=True) for n in names)), T
        )
        assert [o.queue for o in oks] == names, oks
        for n in names:
            await ch.queue_delete(n)
    finally:
        await conn.close()


async def main():
    failed = False
    for f in (close_with_error, channel_65535, nowait_then_qos, if_empty_after_get, pipelined_declares):
        try:
            await asyncio.wait_for(f(), 60)
            print(f"ok {f.__name__}", flush=True)
        except BaseException as e:  # noqa: BLE001 - report, then go on
            failed = True
            print(f"FAIL {f.__name__}: {e!r}", flush=True)
            traceback.print_exc()
    sys.exit(1 if failed else 0)


asyncio.run(main())
