"""The wording of a fleet digest ("5 nodes FAILED: node-a, node-b, … and 12 more"), for every
receiver's own format. Pure. Each receiver passes its escaper (node ids are hostile input: they
are cut to a bounded length first, then escaped, so an escape is never cut in half).

The list is capped by count and each name by length, so a digest's text stays within every
receiver's limits (Discord 2,000 characters of content, Telegram 4,096, Slack's 3,000 per block)
however many nodes fail.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from bridge.frozen import frozen
from bridge.model import Alert, Digest, DigestMember

MAX_NAMED = 20  # nodes named in a digest's text; the rest are counted ("and 12 more")
MAX_NAME = 64  # characters of one node id shown (ids are cut with "…")

Escape = Callable[[str], str]


def _plain(value: str) -> str:
    return value


def _short(value: str) -> str:
    """A node id for a one-line list: line breaks and other whitespace folded (a CRLF in an id must
    not start a line that reads as another alert), cut to MAX_NAME."""
    value = " ".join(value.split())
    return value if len(value) <= MAX_NAME else value[: MAX_NAME - 1] + "…"


@frozen
class DigestWording:
    title: str  # "5 nodes FAILED (env=prod)", escaped
    names: tuple[str, ...]  # the first MAX_NAMED node ids, cut and escaped
    more: int  # members not named

    @property
    def listing(self) -> str:
        """"node-a, node-b and 3 more"."""
        text = ", ".join(self.names)
        return f"{text} and {self.more} more" if self.more else text

    @property
    def headline(self) -> str:
        """"5 nodes FAILED: node-a, node-b and 3 more"."""
        return f"{self.title}: {self.listing}"


def digest_of(alert: Alert) -> Digest:
    """The digest an alert of kind ``digest`` carries (a receiver calls this only for those)."""
    if alert.digest is None:  # pragma: no cover - grouping.py always sets it on digests
        raise ValueError("a digest alert without its members")
    return alert.digest


def wording(digest: Digest, escape: Escape = _plain) -> DigestWording:
    members = digest.members
    n = len(members)
    statuses = Counter(m.status for m in members)
    status = next(iter(statuses)) if len(statuses) == 1 else "failing"
    nodes = "node" if n == 1 else "nodes"
    title = f"{n} more {nodes} {status}" if digest.update else f"{n} {nodes} {status}"
    if digest.labels:
        title += " (" + ", ".join(f"{k}={v}" for k, v in sorted(digest.labels.items())) + ")"
    names = tuple(escape(_short(m.node_id)) for m in members[:MAX_NAMED])
    return DigestWording(escape(title), names, max(0, n - MAX_NAMED))


def member_line(member: DigestMember, escape: Escape = _plain) -> str:
    """One member as a line of a longer listing (email): node, status, incident, opened."""
    inc = member.incident
    opened = f" since {inc.opened_at.strftime('%Y-%m-%d %H:%M:%S')} UTC" if inc is not None else ""
    ident = f" ({inc.id})" if inc is not None else ""
    return f"{escape(_short(member.node_id))} {escape(member.status)}{opened}{ident}"
