"""AsyncClient: the same surface with await, against real daemons."""

from __future__ import annotations

import asyncio

import pytest

import sotto_client
from sotto_client import SottoError


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


def test_async_calls_concurrently_and_errors(world) -> None:
    async def main() -> None:
        async with sotto_client.AsyncClient(world.socket("alice")) as c:
            status, info, convs = await asyncio.gather(
                c.daemon_status(), c.account_info(), c.conversation_list()
            )
            assert status["account"]["address"] == info["address"] == world.address("alice")
            assert world.conv in [x["id"] for x in convs]
            with pytest.raises(SottoError) as e:
                await c.conversation_get(conversation="no-such-conversation")
            assert e.value.kind == "not_found"
            assert (await c.call("account.info"))["address"] == world.address("alice")

    run(main())


def test_async_events_across_a_restart(world) -> None:
    async def main() -> None:
        async with sotto_client.AsyncClient(world.socket("alice")) as alice, sotto_client.AsyncClient() as bob:
            since = (await bob.daemon_status())["last_event_seq"]
            got = []
            texts = []

            async def consume() -> None:
                async for ev in bob.events(since):
                    got.append(ev)
                    if ev["type"] == "message.received":
                        texts.append(ev["message"]["text"])
                        if ev["message"]["text"] == "a2":
                            return

            task = asyncio.ensure_future(consume())
            await alice.message_send(conversation=world.conv, text="a1")
            while "a1" not in texts:
                await asyncio.sleep(0.05)
            await asyncio.get_running_loop().run_in_executor(None, world.daemon, "restart", "bob")
            await alice.message_send(conversation=world.conv, text="a2")
            await task
            seqs = [e["seq"] for e in got]
            assert seqs == sorted(set(seqs))
            assert texts == ["a1", "a2"]

    run(main())
