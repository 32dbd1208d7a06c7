"""Slack message bodies (Block Kit): pure, shared by both modes and by the root edit on resolution.

Every event value is escaped (&, <, >) before any template or default sees it, so no node id,
status, label or incident path can become a mention (<!channel>), a link or a date; the node
link's values are percent-encoded path segments (bridge/render.py). The only control sequences
are the operator's: the configured ``mentions`` and their own templates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.config import SlackReceiverConfig
from bridge.digest_text import digest_of, wording
from bridge.model import Alert
from bridge.receivers.http import alert_colour
from bridge.render import Renderer, slack_escape

EMOJI = {"FAILED": ":red_circle:", "RUNNING": ":large_green_circle:"}
DEFAULT_EMOJI = ":large_orange_circle:"
HEALED = ("resolved", "stable")  # green whatever the node's status (an incident resolved by hand)
MENTIONED = ("firing", "escalation")  # the kinds that carry the receiver's mentions


def slack_message(renderer: Renderer, alert: Alert, cfg: SlackReceiverConfig) -> dict[str, Any]:
    """Fallback text, a headline block, and a coloured attachment with fields."""
    if alert.kind == "digest":
        return slack_digest(alert)
    ctx, used = renderer.context_and_overrides(alert, cfg, escape=slack_escape)
    headline = ctx["title"]
    if "title" not in used:  # an operator's own title may carry its own emoji
        emoji = EMOJI["RUNNING"] if alert.kind in HEALED else EMOJI.get(alert.event.status, DEFAULT_EMOJI)
        headline = f"{emoji} {headline}"
    fallback = headline
    if ctx["previous_status"]:
        fallback += f" (was {ctx['previous_status']}"
        if ctx["previous_duration_human"]:
            fallback += f" for {ctx['previous_duration_human']}"
        fallback += ")"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": cut(headline, 150), "emoji": True}}
    ]
    mentions = " ".join(cfg.mentions) if alert.kind in MENTIONED else ""
    if mentions:  # validated by the config model; in a section so Slack notifies them
        fallback = f"{mentions} {fallback}"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": mentions}})
    if "text" in used:  # an override is mrkdwn written by the operator; fields cover the default
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": cut(ctx["text"], 3000)}})
    where = f"route `{ctx['route']}` · receiver `{ctx['receiver']}` · {ctx['delivery_id']}"
    detail_blocks: list[dict[str, Any]] = [
        {"type": "section", "fields": _fields(alert, ctx)},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": cut(where, 3000)}]},
    ]
    return {
        "text": fallback,
        "blocks": blocks,
        "attachments": [{"color": alert_colour(alert), "fallback": fallback, "blocks": detail_blocks}],
    }


def _fields(alert: Alert, ctx: Mapping[str, Any]) -> list[dict[str, str]]:
    """The attachment's fields, from the escaped context."""
    node = ctx["node"]
    url = ctx["links"]["node"]
    if url:
        node = f"<{url}|{node}>"
    if ctx["previous_status"]:
        previous = ctx["previous_status"]
        if ctx["previous_duration_human"]:
            previous += f" for {ctx['previous_duration_human']}"
    else:
        previous = "none known"
    unix = int(alert.event.timestamp.timestamp())
    # Slack shows the time in each reader's zone; the fallback is UTC.
    when = f"<!date^{unix}^{{date_short_pretty}} {{time_secs}}|{ctx['event_time']}>"
    fields = [("Node", node), ("Status", ctx["status"]), ("Previous status", previous), ("Event time", when)]
    incident = ctx["incident"]
    if incident and incident.get("path"):
        fields.append(("Path", incident["path"]))
    if ctx["labels"]:
        fields.append(("Labels", ", ".join(f"`{k}={v}`" for k, v in sorted(ctx["labels"].items()))))
    return [{"type": "mrkdwn", "text": cut(f"*{name}*\n{value}", 2000)} for name, value in fields]


def cut(text: str, limit: int) -> str:
    """Slack rejects over-long block text (invalid_blocks); shorten instead of losing the alert."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_digest(alert: Alert) -> dict[str, Any]:
    """A fleet digest: the count and status as the headline, the capped list of nodes below."""
    digest = digest_of(alert)
    w = wording(digest, slack_escape)
    headline = f"{EMOJI.get(alert.event.status, DEFAULT_EMOJI)} {w.title}"
    where = (f"route `{slack_escape(alert.route)}` · receiver `{slack_escape(alert.receiver)}` · "
             f"group {digest.id}")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": cut(headline, 150), "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": cut(w.listing, 3000)}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": cut(where, 3000)}]},
    ]
    return {"text": cut(w.headline, 3000), "blocks": blocks}


def digest_progress(title: str, listing: str, recovered: int, total: int) -> dict[str, Any]:
    """A digest's root as its members recover ("3 of 5 recovered"), green once all have. ``title``
    and ``listing`` are the digest's own, already escaped when it was sent."""
    done = recovered >= total
    emoji = EMOJI["RUNNING"] if done else DEFAULT_EMOJI
    progress = f"all {total} recovered" if done else f"{recovered} of {total} recovered"
    headline = f"{emoji} {title} · {progress}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": cut(headline, 150), "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": cut(listing, 3000)}},
    ]
    return {"text": cut(f"{title} · {progress}: {listing}", 3000), "blocks": blocks}
