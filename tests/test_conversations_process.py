"""One conversation per incident with the real ``alert-bridge`` process (issue 14): Slack threads
kept across a restart and across two replicas on one Redis, email threads on what aiosmtpd
receives. FakeSlack's workspace records what each channel shows."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.support.fakes import FakeSlack, SMTPServer
from tests.support.harness import BridgeProcess
from tests.support.redis_server import RedisServer, redis_server  # noqa: F401
from tests.support.slack_workspace import SlackChannel, SlackMessage
from tests.support.waits import until

StartBridge = Callable[..., Any]
FAST_RETRY = {"initial_backoff": "200ms", "max_backoff": "1s", "max_attempts": 1000, "max_elapsed": "1h"}


def slack_bot(slack: FakeSlack, **extra: Any) -> dict[str, Any]:
    return {"type": "slack", "token": slack.token, "channel": "#alerts", "api_url": slack.api_url,
            "rate_limit": 0, "concurrency": 4, "retry": FAST_RETRY, **extra}


def down_route(to: str, **extra: Any) -> list[dict[str, Any]]:
    return [{"name": "down", "match": {"status": ["FAILED"]}, "to": [to], "send_updates": True, **extra}]




async def post(p: BridgeProcess, node: str, status: str, at: datetime) -> None:
    code, doc = await p.event(node, status, timestamp=at)
    assert code == 200 and doc["status"] == "accepted", doc


def node_roots(channel: SlackChannel, node: str) -> list[SlackMessage]:
    return [m for m in channel.roots if f" {node} " in f" {m.headline} " or f"{node}:" in m.headline]


def words(messages: list[SlackMessage]) -> list[str]:
    return [m.headline.split(" ", 1)[1] for m in messages]


async def test_the_thread_survives_a_restart(bridge_process: StartBridge) -> None:
    async with FakeSlack() as slack:
        p: BridgeProcess = await bridge_process(receivers={"chat": slack_bot(slack)}, routes=down_route("chat"))
        channel = slack.channel("#alerts")
        t0 = datetime.now(UTC) - timedelta(seconds=900)
        await post(p, "n1", "FAILED", t0)
        await until(lambda: len(channel.roots) == 1, "the root")
        assert await p.terminate() == 0
        await p.start()  # a new process: the root comes from the store
        await post(p, "n1", "STARTING", t0 + timedelta(seconds=720))
        await post(p, "n1", "RUNNING", t0 + timedelta(seconds=900))
        await until(lambda: len(channel.roots[0].replies) == 2, "the update and the resolution in the thread")
        await asyncio.sleep(0.5)  # anything else would have come by now (a check for extras, not a bound)
        [root] = channel.roots
        assert words(root.replies) == ["n1 now STARTING (incident open 12m)", "RESOLVED n1 after 15m"]
        assert [len(e) > 0 for e in root.edits] == [True] and root.headline.endswith("RESOLVED n1 after 15m")
        update = next(r for r in slack.requests if r.path == "/api/chat.update")
        assert update.payload["channel"] == channel.id  # the ID chat.postMessage answered, not "#alerts"


async def test_two_replicas_on_one_redis_keep_one_thread_per_incident(
    bridge_process: StartBridge, redis_server: RedisServer,  # noqa: F811
) -> None:
    async with FakeSlack() as slack:
        settings: dict[str, Any] = {"receivers": {"chat": slack_bot(slack)},
                                    "routes": down_route("chat", repeat_interval="1s"),
                                    "storage": {"url": redis_server.url}}
        p1 = await bridge_process(**settings)
        p2 = await bridge_process(**settings)
        channel = slack.channel("#alerts")
        nodes = [f"r{i}" for i in range(6)]
        t0 = datetime.now(UTC) - timedelta(seconds=600)
        for i, node in enumerate(nodes):  # each node's events alternate between the replicas
            await post(p1 if i % 2 else p2, node, "FAILED", t0)
        await until(lambda: len(channel.roots) == len(nodes), "one root per node")
        for i, node in enumerate(nodes):
            await post(p2 if i % 2 else p1, node, "STARTING", t0 + timedelta(seconds=60))
        # reminders (either replica's timer loop) join the threads meanwhile
        await until(lambda: all(len(r.replies) >= 3 for r in channel.roots), "updates and reminders in every thread")
        for i, node in enumerate(nodes):
            await post(p1 if i % 2 else p2, node, "RUNNING", t0 + timedelta(seconds=600))
        await until(lambda: all(r.edits for r in channel.roots), "every root edited")
        await until(lambda: all(r.replies[-1].headline.endswith("after 10m") for r in channel.roots),
                    "every resolution in its thread")
        p1.kill()
        p2.kill()
        assert len(channel.roots) == len(nodes)  # no node got a second root
        for node in nodes:
            [root] = node_roots(channel, node)
            assert root.headline.endswith(f"RESOLVED {node} after 10m") and len(root.edits) == 1
            said = words(root.replies)
            assert said[0] == f"{node} now STARTING (incident open 1m)", said
            assert said[-1] == f"RESOLVED {node} after 10m"
            assert all(w.startswith("still STARTING after ") for w in said[1:-1]), said


async def test_email_threads_through_the_real_process(bridge_process: StartBridge) -> None:
    async with SMTPServer() as smtp:
        mail = {"type": "email", "to": ["oncall@example.test"], "from": "Bridge <bridge@alerts.example.test>",
                "smtp": {"host": "127.0.0.1", "port": smtp.port, "security": "none"}, "retry": FAST_RETRY}
        p: BridgeProcess = await bridge_process(receivers={"mail": mail}, routes=down_route("mail"))
        t0 = datetime.now(UTC) - timedelta(seconds=900)
        await post(p, "n1", "FAILED", t0)
        await until(lambda: len(smtp.messages) == 1, "the firing mail")
        assert await p.terminate() == 0
        await p.start()
        await post(p, "n1", "STARTING", t0 + timedelta(seconds=720))
        await post(p, "n1", "RUNNING", t0 + timedelta(seconds=900))
        await until(lambda: len(smtp.messages) == 3, "the update and resolution mails")
        firing, update, resolved = (m.message for m in smtp.messages)
        assert [m["Subject"] for m in (firing, update, resolved)] == [
            "[FIRING] n1 is FAILED", "[UPDATE] n1 now STARTING (incident open 12m)", "[RESOLVED] n1 after 15m"]
        root = firing["Message-ID"]
        assert root.startswith("<inc_") and root.endswith("@alerts.example.test>")
        for m in (update, resolved):
            assert m["In-Reply-To"] == root and m["References"] == root
