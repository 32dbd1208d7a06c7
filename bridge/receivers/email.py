"""Email over SMTP (aiosmtplib): one connection per message, multipart text + HTML (raw MIME: mime.py).

One thread per incident, without the store: the firing's Message-ID is derived from the incident
id and the receiver (``<inc_….r<hash>@<domain of from>>``), so every later message of the incident
(update, reminder, escalation, resolution) names it in In-Reply-To and References, whichever
replica sends it and across restarts. Other messages take their delivery id (stable across
retries, so a mail system can drop a duplicate). Subjects start with the kind: [FIRING],
[RESOLVED], [REMINDER], ...; the subject template renders what follows.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import html
import logging
import re
import ssl
from datetime import UTC, datetime
from email.utils import format_datetime, parseaddr

import aiosmtplib

from bridge.config import EmailReceiverConfig, TemplateKind
from bridge.digest_text import digest_of, member_line, wording
from bridge.errors import ConfigError, DeliveryError, Permanent, RetryLater
from bridge.frozen import frozen
from bridge.model import Alert
from bridge.receivers.base import transport_failure
from bridge.receivers.mime import Envelope, alternative, header, subject, text_part
from bridge.redact import Redactor
from bridge.render import Renderer, precompile

log = logging.getLogger("bridge.receivers.email")

DEFAULT_SUBJECT = "{{ title }}"
# The subject's first word, per notification kind: mail clients and filters sort by it.
SUBJECT_TAGS = {
    "firing": "FIRING", "resolved": "RESOLVED", "reminder": "REMINDER", "update": "UPDATE",
    "escalation": "ESCALATION", "acknowledged": "ACKNOWLEDGED", "flapping": "FLAPPING", "stable": "STABLE",
}
DEFAULT_TAG = "ALERT"  # a plain route's status change (kind "event")
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
DEFAULT_HTML = """\
<!doctype html>
<html><body style="font-family: sans-serif">
<div style="border-left: 6px solid {{ colour }}; padding: 4px 12px">
<h2 style="margin: 4px 0">{{ title }}</h2>
<table cellpadding="4">
<tr><th align="left">Node</th><td>
{%- if links.node %}<a href="{{ links.node }}">{{ node }}</a>{% else %}{{ node }}{% endif %}</td></tr>
<tr><th align="left">Status</th><td>{{ status }}</td></tr>
<tr><th align="left">Previous status</th><td>
{%- if previous_status %}{{ previous_status }}
{%- if previous_duration_human %} for {{ previous_duration_human }}{% endif %}
{%- else %}none known{% endif %}</td></tr>
<tr><th align="left">Event time</th><td>{{ event_time }}</td></tr>
{% if labels %}<tr><th align="left">Labels</th><td>
{%- for k, v in labels | dictsort %}{{ k }}={{ v }}{{ ", " if not loop.last }}{% endfor %}</td></tr>
{% endif -%}
</table>
<p style="color: #777; font-size: small">route {{ route }} &middot; receiver {{ receiver }} &middot;
delivery {{ delivery_id }}</p>
</div>
</body></html>
"""
DEFAULTS: tuple[tuple[TemplateKind, str], ...] = (("text", DEFAULT_SUBJECT), ("html", DEFAULT_HTML))


@frozen
class EmailContent:
    subject: str
    text: str
    html: str


def email_content(renderer: Renderer, alert: Alert, cfg: EmailReceiverConfig) -> EmailContent:
    if alert.kind == "digest":
        return digest_content(alert)
    ctx = renderer.context(alert, cfg)
    subject = renderer.render("text", cfg.subject, DEFAULT_SUBJECT, ctx, "subject")
    html = renderer.render("html", cfg.html, DEFAULT_HTML, ctx, "html")
    # A header cannot hold line breaks; fold any whitespace (CR, LF, U+2028, ...) into single spaces.
    subject = " ".join(subject.split())
    tag = SUBJECT_TAGS.get(alert.kind, DEFAULT_TAG)
    if cfg.subject is None and subject.startswith(tag + " "):  # "RESOLVED node-7 after 15m": said already
        subject = subject[len(tag) + 1 :]
    return EmailContent(subject=f"[{tag}] {subject}", text=ctx["text"], html=html)


@frozen
class Threading:
    message_id: str
    parent: str | None  # the firing's Message-ID, for In-Reply-To and References


def thread_ids(alert: Alert, receiver: str, sender: str) -> Threading:
    """Message-IDs with the domain of ``from``: the firing's from the incident (so every later
    message of it can name it), any other from its delivery id. Only our own ids go in, reduced
    to characters a Message-ID may hold: no event value can reach these headers."""
    domain, tag = _id_parts(receiver, sender)
    own = f"<{_ID_UNSAFE.sub('', alert.delivery_id)}@{domain}>"
    if alert.incident is None:
        return Threading(own, None)
    root = f"<{_ID_UNSAFE.sub('', alert.incident.id)}.r{tag}@{domain}>"
    return Threading(root, None) if alert.kind == "firing" else Threading(own, root)


@functools.cache
def _id_parts(receiver: str, sender: str) -> tuple[str, str]:
    """The domain of ``from`` and the receiver's tag: the same for every message of a receiver."""
    domain = _ID_UNSAFE.sub("", parseaddr(sender)[1].rpartition("@")[2]) or "alert-bridge"
    # Per receiver: two receivers with one mailbox among their recipients must not share an id.
    return domain, hashlib.sha256(receiver.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def build(name: str, cfg: EmailReceiverConfig, *, renderer: Renderer, session: object = None) -> EmailReceiver:
    return EmailReceiver(name, cfg, renderer=renderer)

_MAX_REPLY = 200  # server replies go into reasons; keep them short


class EmailReceiver:
    bounds_send_time = True  # send() runs under asyncio.timeout(cfg.timeout)

    def __init__(self, name: str, cfg: EmailReceiverConfig, *, renderer: Renderer) -> None:
        self.name = name
        self._cfg = cfg
        self._renderer = renderer
        precompile(renderer, DEFAULTS)
        smtp = cfg.smtp
        self._password = smtp.password.get_secret_value() if smtp.password else None
        self._redact = Redactor([self._password])
        self._envelope = Envelope(cfg.from_, cfg.to)
        self._tls: ssl.SSLContext | None = None
        if smtp.security != "none":
            self._tls = _tls_context(name, cfg)

    def __repr__(self) -> str:
        smtp = self._cfg.smtp
        return f"EmailReceiver(name={self.name!r}, smtp={smtp.host}:{smtp.port}, security={smtp.security!r})"

    def message(self, alert: Alert) -> bytes:
        """The raw message (bridge/receivers/mime.py): multipart text + HTML, threaded."""
        content = email_content(self._renderer, alert, self._cfg)
        env = self._envelope
        # Stable across retries, so a mail system can drop a duplicate of the same delivery.
        thread = thread_ids(alert, self.name, self._cfg.from_)
        head = [env.head, subject(content.subject),
                b"Date: " + format_datetime(datetime.now(UTC)).encode() + b"\r\n",
                header("Message-ID", thread.message_id)]
        if thread.parent is not None:  # one conversation per incident in every mail client
            head += [header("In-Reply-To", thread.parent), header("References", thread.parent)]
        # The firing's Message-ID names its incident: the delivery id (the same in logs, the outbox
        # and every other receiver's payload) travels in a header of its own.
        head.append(header("X-Alert-Bridge-Delivery", _ID_UNSAFE.sub("", alert.delivery_id)))
        head.append(b"Auto-Submitted: auto-generated\r\n")  # RFC 3834: no vacation auto-replies
        return alternative(b"".join(head), [text_part("plain", content.text), text_part("html", content.html)])

    async def send(self, alert: Alert) -> None:
        msg = self.message(alert)
        smtp, env = self._cfg.smtp, self._envelope
        where = f"smtp {smtp.host}:{smtp.port}"
        try:
            async with asyncio.timeout(self._cfg.timeout):
                refused, _ = await aiosmtplib.send(
                    msg,
                    sender=env.sender,
                    recipients=env.recipients,
                    mail_options=env.mail_options,
                    hostname=smtp.host,
                    port=smtp.port,
                    username=smtp.username,
                    password=self._password,
                    use_tls=smtp.security == "tls",
                    start_tls=smtp.security == "starttls",  # False: never upgrade opportunistically
                    tls_context=self._tls,
                    timeout=self._cfg.timeout,
                )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise self._refused(where, exc.recipients) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise self._reply(where, exc.code, exc.message) from None
        except aiosmtplib.SMTPNotSupported as exc:  # e.g. no STARTTLS or AUTH offered: configuration
            raise Permanent(self._redact(f"{where}: {exc.message}")) from None
        except aiosmtplib.SMTPException as exc:
            if type(exc) is not aiosmtplib.SMTPException:  # a timeout, a dropped connection: transient
                raise transport_failure(where, exc, self._cfg.timeout) from None
            # aiosmtplib's own word on the configuration (it raises its base class when the server
            # offers no AUTH, or no mechanism it can use): the same on every retry.
            raise Permanent(self._redact(f"{where}: {' '.join(exc.message.split())[:_MAX_REPLY]}")) from None
        except (OSError, TimeoutError) as exc:
            raise transport_failure(where, exc, self._cfg.timeout) from None
        if refused:
            # Others got it: retrying would send them a duplicate, so only note the rest.
            log.warning(
                "receiver %s: %s refused some recipients: %s",
                self.name,
                where,
                ", ".join(f"{addr} ({resp.code})" for addr, resp in refused.items()),
            )

    def _reply(self, where: str, code: int, message: str) -> DeliveryError:
        text = " ".join(message.split())[:_MAX_REPLY]
        reason = self._redact(f"{where} answered {code} {text}".rstrip())
        # 5xx is the server's final word; 4xx and odd codes (-1: no proper reply) may pass.
        if 500 <= code < 600:
            return Permanent(reason)
        return RetryLater(reason)

    def _refused(self, where: str, recipients: list[aiosmtplib.SMTPRecipientRefused]) -> DeliveryError:
        codes = [r.code for r in recipients]
        first = recipients[0] if recipients else None
        detail = f" {first.code} {' '.join(first.message.split())[:_MAX_REPLY]}" if first else ""
        reason = self._redact(f"{where} refused every recipient:{detail}")
        if codes and all(500 <= c < 600 for c in codes):
            return Permanent(reason)
        return RetryLater(reason)

    async def close(self) -> None:
        """Nothing held open: each message uses its own connection."""


def _tls_context(name: str, cfg: EmailReceiverConfig) -> ssl.SSLContext:
    ca_file = cfg.smtp.ca_file
    try:
        return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        detail = getattr(exc, "strerror", None) or type(exc).__name__
        raise ConfigError([f"receivers.{name}.smtp.ca_file: cannot load {ca_file}: {detail}"]) from None


def digest_content(alert: Alert) -> EmailContent:
    """A fleet digest: the count and the first nodes in the subject, every member in the body
    (one line each: node, status, since when, incident id; HTML-escaped in the HTML part)."""
    digest = digest_of(alert)
    w = wording(digest)
    subject = " ".join(f"[alert-bridge] {w.headline}".split())
    lines = [member_line(m) for m in digest.members]
    foot = f"route {alert.route} · receiver {alert.receiver} · group {digest.id}"
    text = "\n".join([w.title, "", *lines, "", foot]) + "\n"
    esc = html.escape
    items = "".join(f"<li>{member_line(m, esc)}</li>" for m in digest.members)
    body = (f'<!doctype html>\n<html><body style="font-family: sans-serif">\n<h2>{esc(w.title)}</h2>\n'
            f'<ul>{items}</ul>\n<p style="color: #777; font-size: small">{esc(foot)}</p>\n</body></html>\n')
    return EmailContent(subject=subject[:900], text=text, html=body)
