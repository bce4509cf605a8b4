"""Bot: handlers, the cursor on disk, the backlog after downtime, nothing answered twice."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from conftest import wait_until

BOT = r'''
import sys
from sotto_client import Bot

bot = Bot(sys.argv[1], backlog=False)

@bot.on_message
def echo(msg):
    if msg.text == "quit":
        bot.stop()
        return None
    return "echo: " + msg.text

bot.run()
'''


def replies(alice, world):
    return [m["text"] for m in alice.message_list(conversation=world.conv, limit=1000)
            if m["text"].startswith("echo: ")]


def test_bot_answers_once_across_bot_and_daemon_restarts(world, alice) -> None:
    with tempfile.TemporaryDirectory() as d:
        script = os.path.join(d, "echo_bot.py")
        state = os.path.join(d, "cursor")
        with open(script, "w") as f:
            f.write(BOT)

        def start():
            return subprocess.Popen([sys.executable, script, state], env=os.environ.copy())

        bot = start()
        try:
            wait_until("the bot's cursor file", lambda: os.path.exists(state))
            alice.message_send(conversation=world.conv, text="b1")
            wait_until("the reply to b1", lambda: "echo: b1" in replies(alice, world))
            # The bot goes down; messages arrive meanwhile, and bob's daemon restarts too.
            bot.kill()
            bot.wait()
            alice.message_send(conversation=world.conv, text="b2")
            world.daemon("restart", "bob")
            alice.message_send(conversation=world.conv, text="b3")
            bot = start()
            wait_until("replies to the backlog", lambda: {"echo: b2", "echo: b3"} <= set(replies(alice, world)))
            # Restart the daemon under the running bot.
            world.daemon("restart", "bob")
            alice.message_send(conversation=world.conv, text="b4")
            wait_until("the reply to b4", lambda: "echo: b4" in replies(alice, world))
            alice.message_send(conversation=world.conv, text="quit")
            bot.wait(60)
            assert bot.returncode == 0
        finally:
            if bot.poll() is None:
                bot.kill()
                bot.wait()
        # Once more from the cursor: nothing new to answer, nothing answered again.
        bot = start()
        alice.message_send(conversation=world.conv, text="quit")
        bot.wait(60)
        got = replies(alice, world)
        for t in ("b1", "b2", "b3", "b4"):
            assert got.count("echo: " + t) == 1, got
        with open(state) as f:
            assert int(f.read()) > 0


def test_bot_reply_is_a_reply(world, alice) -> None:
    listed = alice.message_list(conversation=world.conv, limit=1000)
    by_id = {m["id"]: m for m in listed}
    echoes = [m for m in listed if m["text"].startswith("echo: ")]
    assert echoes, "run after the bot test"
    for m in echoes:
        assert by_id[m["reply_to"]]["text"] == m["text"][len("echo: "):]
