"""Case: CPU per delivered alert, per receiver type, against a bare client sending the same thing.

For each receiver type (webhook, Slack, PagerDuty, email) a bridge with that one receiver takes N
events while its sink is down (HTTP 503, SMTP 451), so the outbox fills without delivering and
ingest is over before the window opens. Then the sink comes back and the bridge's CPU time
(/proc/PID/stat) is read from that moment until every alert has arrived and its outcome has had
time to be recorded. The bridge's idle CPU rate (its background loops, measured right after over
IDLE_S) times the window is subtracted. What is left, divided by N, is the CPU a delivery costs:
claim, render, send, read the answer, record.

The floor is benchlib.floor_client, pinned to the same core, sending the delivery the sink captured
(same body and headers; for email the same raw message) N times with the receiver's concurrency:
what a bare aiohttp client (aiosmtplib for SMTP) spends on the wire work alone.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from typing import Any

from benchlib.bridge import make_config, receiver_settings, require_bridge, start_bridge
from benchlib.client import post_all
from benchlib.common import SERVER_CORE, Invalid, Procs, bench_env, child_env, cpu_seconds, pin_cmd, python_cmd
from benchlib.context import Context
from benchlib.events import fresh_events
from benchlib.servers import Sink, start_sink

# Retries back off at most 1 s: after the outage every job is due again within a second.
RETRY = {"max_attempts": 1000, "max_elapsed": "1h", "initial_backoff": "200ms", "max_backoff": "1s"}
SLACK_PATH = "/services/T000BENCH/B000BENCH/XXXXBENCH"
SETTLE_S = 0.3  # after the last arrival: its outcome is recorded (one commit) well within this
# The bridge's idle CPU is measured over this long: in full runs one period of its slowest background
# loop (gauges every min(5 s, prune_interval), which decodes every node record), so the rate is fair.
IDLE_S = {"full": 5.0, "quick": 1.0}
RECEIVERS = ("webhook", "slack", "pagerduty", "email")
EMAIL_SHARE = 5  # email sends 1/5 of the alerts: each costs several times a webhook's (SMTP dialogue)
CHANNEL = {"webhook": "hook", "slack": "slack", "pagerduty": "pagerduty", "email": "mail"}


def receiver_config(kind: str, sink: Sink) -> dict[str, Any]:
    base: dict[str, Any] = {"retry": RETRY}
    if kind == "webhook":
        return {**base, "type": "webhook", "url": f"{sink.url}/hook"}
    if kind == "slack":  # rate limit off: we measure CPU, not Slack's pacing
        return {**base, "type": "slack", "webhook_url": sink.url + SLACK_PATH, "rate_limit": 0}
    if kind == "pagerduty":
        return {**base, "type": "pagerduty", "routing_key": "R" * 32, "api_url": f"{sink.url}/v2/enqueue",
                "rate_limit": 0}
    assert sink.smtp_port is not None
    return {**base, "type": "email", "to": ["oncall@example.com"], "from": "alert-bridge@example.com",
            "smtp": {"host": "127.0.0.1", "port": sink.smtp_port, "security": "none"}}


def floor_url(kind: str, sink: Sink) -> str:
    if kind == "email":
        return f"smtp://127.0.0.1:{sink.smtp_port}"
    return sink.url + {"webhook": "/hook", "slack": SLACK_PATH, "pagerduty": "/v2/enqueue"}[kind]


def run_floor(ctx: Context, url: str, n: int, concurrency: int, sample: dict[str, Any], tag: str) -> dict[str, Any]:
    """benchlib.floor_client pinned to the server core: n sends of ``sample``; its JSON result."""
    path = ctx.workdir / f"floor-sample-{tag}.json"
    path.write_text(json.dumps(sample))
    cmd = pin_cmd(SERVER_CORE, python_cmd("-m", "benchlib.floor_client", url, str(n), str(concurrency), str(path)))
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=child_env(bench_env()))
    (ctx.log_dir / f"floor-{tag}.log").write_text(f"$ {' '.join(cmd)}\n{done.stdout}{done.stderr}")
    if done.returncode != 0:
        raise RuntimeError(f"floor client failed: {done.stderr[-400:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def one(ctx: Context, kind: str, items: list[tuple[str, str, bytes]]) -> dict[str, Any]:
    n = len(items)
    channel = CHANNEL[kind]
    with Procs(ctx.log_dir) as procs:
        sink = start_sink(procs, f"sink-delivery-{kind}", smtp=kind == "email")
        sink.control(status=503)
        cfg = make_config(
            public_key=ctx.public_key,
            storage_url=f"sqlite:///{ctx.workdir / f'delivery-{kind}.db'}",
            sink_url=sink.url,
            receivers={kind: receiver_config(kind, sink)},
        )
        concurrency = int(receiver_settings(cfg, kind)["concurrency"])
        bridge = start_bridge(procs, f"bridge-delivery-{kind}", cfg, ctx.workdir)
        fill = post_all(bridge.url, [(sig, body) for _, sig, body in items], concurrency=32)
        if fill.ok != n:
            raise Invalid(f"{kind}: filling the outbox: {fill.ok} of {n} accepted ({fill.first_error})")
        time.sleep(0.5)  # the last accepts' commits land; the outage keeps every job undelivered

        cpu0, t0 = cpu_seconds(bridge.proc.pid), time.monotonic()
        sink.control(status=200, reset=True)
        st = sink.wait_delivered(n, timeout=max(20.0, min(120.0, ctx.remaining(reserve=60))), stall=10,
                                 channel=channel)
        last = st["last_ok"] or time.monotonic()
        time.sleep(SETTLE_S)
        cpu1, t1 = cpu_seconds(bridge.proc.pid), time.monotonic()
        idle_s = IDLE_S.get(ctx.mode.name, 2.0)
        time.sleep(idle_s)
        cpu2 = cpu_seconds(bridge.proc.pid)
        bridge.check_alive()
        delivered = Sink.count(st)
        if delivered < n:
            raise Invalid(f"{kind}: {delivered} of {n} alerts delivered after the outage")
        idle_rate = (cpu2 - cpu1) / idle_s
        window = t1 - t0
        cpu = max(0.0, (cpu1 - cpu0) - idle_rate * window)
        sample = sink.sample(channel)
        procs.stop(bridge.proc)
        if sample is None:
            raise Invalid(f"{kind}: the sink captured no delivery")
        sink.control(reset=True)
        floor = run_floor(ctx, floor_url(kind, sink), n, concurrency, sample, f"delivery-{kind}")
        if floor["statuses"].keys() - {"200", "202", "250"}:
            raise Invalid(f"{kind}: the floor client got {floor['statuses']}")
    return {
        "alerts": n,
        "concurrency": concurrency,
        "cpu_us_per_alert": cpu / n * 1e6,
        "cpu_s": cpu,
        "window_s": window,
        "idle_cpu_per_s": idle_rate,
        "rate": n / max(last - t0, 1e-3),
        "payload_bytes": len(sample["body"]),
        "floor": floor,
    }


def run(ctx: Context) -> dict[str, Any]:
    require_bridge()
    n = ctx.mode.delivery_alerts
    items = fresh_events(ctx.key, n, secrets.token_hex(6))  # one FAILED event per node: one alert each
    out: dict[str, Any] = {"alerts": n, "retry": RETRY, "by_receiver": {}}
    for kind in RECEIVERS:
        t0 = time.monotonic()
        try:
            out["by_receiver"][kind] = one(ctx, kind, items[: max(60, n // EMAIL_SHARE)] if kind == "email" else items)
        except Invalid as exc:
            out["by_receiver"][kind] = {"status": "invalid", "reason": str(exc)}
        ctx.log(f"  delivery: {kind} in {time.monotonic() - t0:.1f}s")
    return out
