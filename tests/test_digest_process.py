"""Fleet digests end to end: the real ``alert-bridge`` process, a webhook sink and the Slack fake
on loopback, a real Redis for two replicas. Every wait is "until the sink holds this", with a
generous deadline that only turns a hang into a failure; no assertion is about speed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from tests.support.fakes import FakeSlack, WebhookSink
from tests.support.harness import BridgeProcess
from tests.support.redis_server import RedisServer, redis_server  # noqa: F401
from tests.support.waits import until

StartBridge = Callable[..., Any]
FAST_RETRY = {"initial_backoff": "200ms", "max_backoff": "1s", "max_attempts": 1000, "max_elapsed": "1h"}
HOSTILE = "<!channel> @here <@U1> & *x*"




def docs(sink: WebhookSink) -> list[dict[str, Any]]:
    return [r.json() for r in sink.delivered]


def digests(sink: WebhookSink) -> list[dict[str, Any]]:
    return [d for d in docs(sink) if d["kind"] == "digest"]


def members(sink: WebhookSink) -> list[str]:
    return [m["nodeId"] for d in digests(sink) for m in d["members"]]


async def start(bridge_process: StartBridge, receivers: dict[str, Any], route: dict[str, Any],
                **more: Any) -> BridgeProcess:
    p: BridgeProcess = await bridge_process(
        receivers=receivers,
        routes=[{"name": "fleet", "match": {"status": ["FAILED"]}, "to": list(receivers), **route}], **more)
    return p


def hook(url: str) -> dict[str, Any]:
    return {"type": "webhook", "url": url, "retry": FAST_RETRY}


async def post(p: BridgeProcess, node: str, status: str = "FAILED") -> None:
    code, doc = await p.event(node, status, timestamp=datetime.now(UTC))
    assert code == 200 and doc["status"] == "accepted", doc


async def test_ten_failures_are_one_digest_one_slack_message_and_ten_resolutions(
    bridge_process: StartBridge,
) -> None:
    async with WebhookSink() as sink, FakeSlack() as slack, FakeSlack() as bot:
        receivers = {"hook": hook(sink.url), "chat": {"type": "slack", "webhook_url": slack.webhook_url,
                                                      "retry": FAST_RETRY},
                     "thread": {"type": "slack", "token": bot.token, "api_url": bot.api_url, "channel": "#alerts",
                                "retry": FAST_RETRY}}
        p = await start(bridge_process, receivers, {"group_wait": "2s", "group_interval": "1m"})
        nodes = [HOSTILE, *[f"node-{i}" for i in range(9)]]
        began = time.monotonic()
        for node in nodes:
            await post(p, node)
        posted_within_wait = time.monotonic() - began < 2.0  # else a second group is correct behaviour
        await until(lambda: len(members(sink)) >= 10, "every failure in a digest")
        await until(lambda: len(slack.messages) >= 1, "the Slack digest")
        if posted_within_wait:
            [doc] = digests(sink)
            assert doc["count"] == 10 and doc["group"]["update"] is False
            [msg] = slack.messages
            assert msg.payload["text"].startswith("10 nodes FAILED: ")
        assert sorted(members(sink)) == sorted(nodes)
        assert [d["kind"] for d in docs(sink)] == ["digest"] * len(digests(sink))  # no per-node firing
        text = str(slack.messages[0].payload)
        assert "<!channel>" not in text and "<@U1>" not in text and "&lt;!channel&gt;" in text
        incidents = {m["nodeId"]: m["incident"]["id"] for d in digests(sink) for m in d["members"]}

        # a failure within group_interval joins the group as a follow-up
        await post(p, "late-node")
        await until(lambda: "late-node" in members(sink), "the follow-up")
        follow = digests(sink)[-1]
        assert follow["group"] == {**digests(sink)[0]["group"], "update": True}
        assert [m["nodeId"] for m in follow["members"]] == ["late-node"]

        # resolutions stay per incident
        for node in nodes:
            await post(p, node, "RUNNING")
        await until(lambda: len([d for d in docs(sink) if d["kind"] == "resolved"]) >= 10, "ten resolutions")
        resolved = {d["event"]["nodeId"]: d["incident"]["id"] for d in docs(sink) if d["kind"] == "resolved"}
        assert resolved == {n: incidents[n] for n in nodes}
        await until(lambda: len(slack.messages) >= len(digests(sink)) + 10, "the Slack resolutions")

        # bot-token mode: the digest is the thread root; the follow-up and every resolution reply
        # under it, and each resolution edits the root to count the recovered members
        channel = bot.channel("#alerts")
        await until(lambda: sum(len(r.replies) for r in channel.roots) >= len(digests(sink)) - 1 + 10,
                    "the thread's follow-up and resolutions")
        if posted_within_wait:
            [root] = channel.roots
            assert len(root.replies) == 11
            assert root.edits[-1]["text"].startswith("10 nodes FAILED · 10 of 11 recovered: ")


async def test_two_replicas_on_one_redis_send_one_digest(
    bridge_process: StartBridge, redis_server: RedisServer,  # noqa: F811
) -> None:
    async with WebhookSink() as sink:
        settings = {"storage": {"url": redis_server.url}}
        route = {"group_wait": "3s"}
        p1 = await start(bridge_process, {"hook": hook(sink.url)}, route, **settings)
        p2 = await start(bridge_process, {"hook": hook(sink.url)}, route, **settings)
        began = time.monotonic()
        for i in range(10):
            await post(p1 if i % 2 else p2, f"n{i}")
        posted_within_wait = time.monotonic() - began < 3.0
        await until(lambda: len(members(sink)) >= 10, "every failure in a digest")
        await asyncio.sleep(1.0)  # a second digest would be on its way by now (a check for extras)
        assert sorted(members(sink)) == sorted(f"n{i}" for i in range(10))  # each node once, none twice
        if posted_within_wait:
            assert len(digests(sink)) == 1
        assert len({r.headers["webhook-id"] for r in sink.delivered}) == len(sink.delivered)


async def test_sigkill_during_group_wait_loses_nothing(bridge_process: StartBridge) -> None:
    async with WebhookSink() as sink:
        p = await start(bridge_process, {"hook": hook(sink.url)}, {"group_wait": "2s"})
        for i in range(5):
            await post(p, f"n{i}")
        p.kill()  # SIGKILL: the five firings are held in the outbox, none sent
        assert sink.requests == []
        await p.start()
        await until(lambda: len(members(sink)) >= 5, "the digest after the restart")
        assert sorted(members(sink)) == [f"n{i}" for i in range(5)]


async def test_sigkill_while_the_digest_is_sent_sends_it_again_with_the_same_ids(
    bridge_process: StartBridge,
) -> None:
    async with WebhookSink() as sink:
        p = await start(bridge_process, {"hook": hook(sink.url)}, {"group_wait": "1s"})
        sink.delay_next(30)  # the digest's request hangs: it is in flight when the bridge dies
        for i in range(3):
            await post(p, f"n{i}")
        await until(lambda: len(sink.requests) >= 1, "the digest's first attempt")
        p.kill()
        await p.start()
        await until(lambda: len(sink.requests) >= 2 and sink.requests[1].accepted, "the digest sent again")
        first, again = sink.requests[0].json(), sink.requests[1].json()
        assert again["kind"] == "digest" and sorted(m["nodeId"] for m in again["members"]) == ["n0", "n1", "n2"]
        # the same message: a consumer drops the duplicate by webhook-id, and threads by group id
        assert again["deliveryId"] == first["deliveryId"] and again["group"] == first["group"]
        assert sink.requests[1].headers["webhook-id"] == sink.requests[0].headers["webhook-id"]


async def test_check_prints_grouping_and_warns_about_nonsense(bridge_process: StartBridge) -> None:
    from tests.support.cli_runner import run_cli

    async with WebhookSink() as sink:
        p = await start(bridge_process, {"hook": hook(sink.url)},
                        {"group_wait": "1m", "group_interval": "30s", "group_by": ["env"]})
        r = await run_cli("check", "-c", str(p.config_path))
        assert r.code == 0, r
        assert "grouping      fleet: digests by env, group_wait 1m, group_interval 30s" in r.out
        assert "routes[0].group_interval: 30s is shorter than group_wait (1m)" in r.err
        p.write_config({**p.cfg, "routes": [{**p.cfg["routes"][0], "group_wait": "500ms"}]})
        bad = await run_cli("check", "-c", str(p.config_path))
        assert bad.code == 2 and "routes[0].group_wait" in bad.err and "at least 1s" in bad.err
