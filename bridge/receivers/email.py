"""Email over SMTP (aiosmtplib): one connection per message, multipart text + HTML."""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate

import aiosmtplib

from bridge.config import EmailReceiverConfig, TemplateKind
from bridge.errors import ConfigError, DeliveryError, Permanent, RetryLater
from bridge.model import Alert
from bridge.receivers.base import transport_failure
from bridge.redact import Redactor
from bridge.render import Renderer, precompile

log = logging.getLogger("bridge.receivers.email")

DEFAULT_SUBJECT = "[alert-bridge] {{ title }}"
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


@dataclass(frozen=True, slots=True)
class EmailContent:
    subject: str
    text: str
    html: str


def email_content(renderer: Renderer, alert: Alert, cfg: EmailReceiverConfig) -> EmailContent:
    ctx = renderer.context(alert, cfg)
    subject = renderer.render("text", cfg.subject, DEFAULT_SUBJECT, ctx, "subject")
    html = renderer.render("html", cfg.html, DEFAULT_HTML, ctx, "html")
    # A header cannot hold line breaks; fold any whitespace into single spaces.
    return EmailContent(subject=" ".join(subject.split()), text=ctx["text"], html=html)


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
        self._tls: ssl.SSLContext | None = None
        if smtp.security != "none":
            self._tls = _tls_context(name, cfg)

    def __repr__(self) -> str:
        smtp = self._cfg.smtp
        return f"EmailReceiver(name={self.name!r}, smtp={smtp.host}:{smtp.port}, security={smtp.security!r})"

    def message(self, alert: Alert) -> EmailMessage:
        content = email_content(self._renderer, alert, self._cfg)
        msg = EmailMessage()
        msg["From"] = self._cfg.from_
        msg["To"] = ", ".join(self._cfg.to)
        msg["Subject"] = content.subject
        msg["Date"] = formatdate(usegmt=True)
        # Stable across retries, so a mail system can drop a duplicate of the same delivery.
        msg["Message-ID"] = f"<{alert.delivery_id}@alert-bridge>"
        msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation auto-replies
        msg.set_content(content.text)
        msg.add_alternative(content.html, subtype="html")
        return msg

    async def send(self, alert: Alert) -> None:
        msg = self.message(alert)
        smtp = self._cfg.smtp
        where = f"smtp {smtp.host}:{smtp.port}"
        try:
            async with asyncio.timeout(self._cfg.timeout):
                refused, _ = await aiosmtplib.send(
                    msg,
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
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
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
