"""Email receiver against a real aiosmtpd server on 127.0.0.1 (STARTTLS, implicit TLS, plain)."""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.config import parse
from bridge.errors import ConfigError, Permanent, RetryLater
from bridge.model import Alert, IncidentRef
from bridge.receivers import Receiver, build_receiver
from bridge.render import Renderer
from tests.support.fakes import SMTP_USER, T0, CertFiles, SMTPServer, free_port, make_alert, make_cert

pytest_plugins = ["tests.support.fakes"]
pytestmark = pytest.mark.timeout(20)

TO = ["oncall@example.test", "ops@example.test"]


async def email_receiver(server: SMTPServer | None, smtp: dict[str, Any], *, name: str = "ops-email",
                         **extra: Any) -> Receiver:
    settings = {"host": "127.0.0.1", "port": server.port if server else free_port(), **smtp}
    rcv = {"type": "email", "to": TO, "from": "Alert Bridge <bridge@example.test>", "smtp": settings, **extra}
    cfg = parse({"receivers": {name: rcv}}, env={})
    # The session is unused by email; build_receiver takes it for every type.
    async with aiohttp.ClientSession() as session:
        return build_receiver(name, cfg.receivers[name], renderer=Renderer.from_config(cfg), session=session)


def starttls_auth(cert: CertFiles) -> dict[str, Any]:
    user, password = SMTP_USER
    return {"security": "starttls", "ca_file": str(cert.cert_file), "username": user, "password": password}


async def test_starttls_with_auth_delivers_multipart(smtp_tls_server: SMTPServer, tls_cert: CertFiles) -> None:
    receiver = await email_receiver(smtp_tls_server, starttls_auth(tls_cert))
    alert = make_alert()
    await receiver.send(alert)

    [mail] = smtp_tls_server.messages
    assert mail.tls is True
    assert mail.login == SMTP_USER[0]
    assert mail.rcpt_tos == TO
    assert mail.mail_from == "bridge@example.test"
    msg = mail.message
    assert msg.get_content_type() == "multipart/alternative"
    assert msg["Subject"] == "[ALERT] node-prod-1 is FAILED"  # a plain route's event
    assert msg["To"] == ", ".join(TO)
    assert msg["Message-ID"] == f"<{alert.delivery_id}@example.test>"  # the domain of from
    assert msg["In-Reply-To"] is None and msg["References"] is None
    assert msg["X-Alert-Bridge-Delivery"] == alert.delivery_id
    assert "node-prod-1 is FAILED (was RUNNING for 3h 12m)." in mail.part("plain")
    assert "<h2" in mail.part("html") and "node-prod-1 is FAILED" in mail.part("html")


async def test_implicit_tls_delivers(tls_cert: CertFiles) -> None:
    async with SMTPServer(security="tls", cert=tls_cert) as server:
        receiver = await email_receiver(server, {"security": "tls", "ca_file": str(tls_cert.cert_file)})
        await receiver.send(make_alert())
        [mail] = server.messages
        assert mail.tls is True


async def test_plain_smtp_without_tls_delivers(smtp_server: SMTPServer) -> None:
    receiver = await email_receiver(smtp_server, {"security": "none"})
    await receiver.send(make_alert(status="RUNNING", previous="FAILED"))
    [mail] = smtp_server.messages
    assert mail.tls is False
    assert mail.login is None
    assert mail.message["Subject"] == "[ALERT] node-prod-1 is RUNNING"


async def test_untrusted_certificate_is_retry_later(
    smtp_tls_server: SMTPServer, tmp_path: Path, tls_cert: CertFiles
) -> None:
    other_ca = make_cert(tmp_path / "other")
    smtp = {**starttls_auth(tls_cert), "ca_file": str(other_ca.cert_file)}
    with pytest.raises(RetryLater, match="TLS certificate not trusted"):
        await (await email_receiver(smtp_tls_server, smtp)).send(make_alert())
    assert smtp_tls_server.messages == []


async def test_missing_ca_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        await email_receiver(None, {"security": "starttls", "ca_file": str(tmp_path / "nope.pem")})
    assert info.value.problems[0].startswith("receivers.ops-email.smtp.ca_file: cannot load")


# --- failures ------------------------------------------------------------------------------------


INJECTED = "=?utf-8?q?=0D=0ABcc:_evil@example.test?= <bridge@example.test>"


@pytest.mark.parametrize(("key", "value"), [
    ("from", INJECTED),  # the email package decodes the encoded word and refuses the CR LF in it
    ("from", "Alert Bridge <bridge@example.test>\nBcc: evil@example.test"),
    ("to", ["ops@example.test", INJECTED]),
    ("to", ["ops@example.test\r\nBcc: evil@example.test"]),
    ("from", "N" * 1200 + " <bridge@example.test>"),  # one word: no fold makes the line shorter than 998
    # The email package's folder writes what an encoded word decodes to unquoted: a reader saw
    # three addresses ("Ops", "evil@example.test", the real one), or another address, or a raw NUL.
    ("from", "=?utf-8?q?Ops=2C_evil=40example.test?= <bridge@example.test>"),
    ("from", "=?utf-8?q?x=22_=3Cevil@example.test=3E?= <bridge@example.test>"),
    ("to", ["=?utf-8?q?a=00b?= <ops@example.test>"]),
    ("to", ["=?utf-8?q?=E2=80=A8Bcc:_evil@example.test?= <ops@example.test>"]),
], ids=["encoded-crlf-from", "lf-from", "encoded-crlf-to", "crlf-to", "long-from", "encoded-comma-from",
        "encoded-angle-from", "encoded-nul-to", "encoded-u2028-to"])
def test_from_or_to_that_cannot_be_a_header_is_a_config_error(key: str, value: Any) -> None:
    """Found by ``check`` and refusing a reload, not a ValueError when the receiver is built."""
    rcv = {"type": "email", "to": TO, "from": "Alert Bridge <bridge@example.test>",
           "smtp": {"host": "127.0.0.1"}, key: value}
    with pytest.raises(ConfigError) as info:
        parse({"receivers": {"ops-email": rcv}}, env={})
    assert f"receivers.ops-email.{key}" in str(info.value)


@pytest.mark.parametrize("sender", ["Ålert Brïdge Störungsmeldungen Rechenzentrum Frankfurt am Main <b@example.test>",
                                    '"Ops, Berlin <night>" <b@example.test>', "b@bücher.example", "öps@example.test",
                                    "Team: b@example.test, c@example.test;", "b@example.test (comment)"])
def test_careful_senders_are_accepted(sender: str) -> None:
    rcv = {"type": "email", "to": [*TO, sender], "from": sender, "smtp": {"host": "127.0.0.1"}}
    parse({"receivers": {"ops-email": rcv}}, env={})


async def test_encoded_display_name_in_from_is_kept(smtp_server: SMTPServer) -> None:
    receiver = await email_receiver(smtp_server, {"security": "none"},
                                    **{"from": "=?utf-8?q?Alert_Br=C3=BCcke?= <bridge@example.test>"})
    await receiver.send(make_alert())
    [mail] = smtp_server.messages
    assert mail.message["From"] == "Alert Brücke <bridge@example.test>"
    assert mail.mail_from == "bridge@example.test"


async def test_5xx_reply_is_permanent(smtp_server: SMTPServer) -> None:
    smtp_server.fail_next("554 5.7.1 Message rejected as spam", stage="data")
    with pytest.raises(Permanent) as info:
        await (await email_receiver(smtp_server, {"security": "none"})).send(make_alert())
    assert info.value.reason == f"smtp 127.0.0.1:{smtp_server.port} answered 554 5.7.1 Message rejected as spam"


async def test_4xx_reply_is_retry_later(smtp_server: SMTPServer) -> None:
    smtp_server.fail_next("451 4.3.0 Mail server temporarily unavailable", stage="mail")
    receiver = await email_receiver(smtp_server, {"security": "none"})
    with pytest.raises(RetryLater, match=r"answered 451 4\.3\.0"):
        await receiver.send(make_alert())
    await receiver.send(make_alert())  # the next attempt goes through
    assert len(smtp_server.messages) == 1


async def test_all_recipients_refused_5xx_is_permanent_4xx_retry(smtp_server: SMTPServer) -> None:
    receiver = await email_receiver(smtp_server, {"security": "none"})
    smtp_server.fail_next("550 5.1.1 No such user", n=2, stage="rcpt")
    with pytest.raises(Permanent, match=r"refused every recipient: 550 5\.1\.1 No such user"):
        await receiver.send(make_alert())
    smtp_server.fail_next("450 4.2.0 Mailbox busy", n=2, stage="rcpt")
    with pytest.raises(RetryLater, match="450"):
        await receiver.send(make_alert())


async def test_wrong_password_is_permanent(smtp_tls_server: SMTPServer, tls_cert: CertFiles) -> None:
    smtp = {**starttls_auth(tls_cert), "password": "not-the-password-123"}
    with pytest.raises(Permanent) as info:
        await (await email_receiver(smtp_tls_server, smtp)).send(make_alert())
    assert "535" in info.value.reason
    assert "not-the-password-123" not in str(info.value)


async def test_auth_configured_but_not_offered_is_permanent_and_says_why(smtp_server: SMTPServer) -> None:
    """A username and password for a server that offers no AUTH (here: no TLS, so none is offered):
    a configuration error, the same on every retry, in aiosmtplib's words."""
    smtp = {"security": "none", "username": "bridge", "password": "pw-not-shown-42"}
    with pytest.raises(Permanent) as info:
        await (await email_receiver(smtp_server, smtp)).send(make_alert())
    assert "AUTH extension is not supported" in info.value.reason and "pw-not-shown-42" not in str(info.value)
    assert not smtp_server.messages


async def test_connection_refused_is_retry_later() -> None:
    with pytest.raises(RetryLater) as info:
        await (await email_receiver(None, {"security": "none"})).send(make_alert())
    assert info.value.reason.endswith("SMTPConnectError: Connection refused")


async def test_silent_server_times_out_as_retry_later() -> None:
    with socket.socket() as listener:  # accepts connections but never greets
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        receiver = await email_receiver(None, {"security": "none", "port": port}, timeout="300ms")
        started = time.monotonic()
        with pytest.raises(RetryLater) as info:
            await receiver.send(make_alert())
        assert time.monotonic() - started < 2
        assert info.value.reason == f"smtp 127.0.0.1:{port}: no answer within 0.3s"


async def test_no_password_in_errors_or_logs(
    smtp_tls_server: SMTPServer, tls_cert: CertFiles, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    password = SMTP_USER[1]
    receiver = await email_receiver(smtp_tls_server, starttls_auth(tls_cert))
    errors: list[BaseException] = []
    smtp_tls_server.fail_next("554 5.0.0 nope", stage="data")
    smtp_tls_server.fail_next("421 4.0.0 later", stage="mail")
    smtp_tls_server.fail_next("550 5.1.1 x", n=len(TO), stage="rcpt")
    for _ in range(3):
        with pytest.raises((Permanent, RetryLater)) as info:
            await receiver.send(make_alert())
        errors.append(info.value)
    await receiver.send(make_alert())  # and a success, which logs what it logs
    seen = "\n".join([str(e) for e in errors] + [repr(e) for e in errors] + [repr(receiver)] + [caplog.text])
    assert password not in seen


async def test_resolution_subject_and_body_say_resolved(smtp_server: SMTPServer) -> None:
    receiver = await email_receiver(smtp_server, {"security": "none"})
    ref = IncidentRef("inc_0123456789abcdef0123", T0 - timedelta(minutes=15), 900.0,
                      "FAILED 12m → STARTING 3m → RUNNING")
    await receiver.send(replace(make_alert(node="node-7", status="RUNNING", previous="STARTING"),
                                kind="resolved", incident=ref))
    [mail] = smtp_server.messages
    assert mail.message["Subject"] == "[RESOLVED] node-7 after 15m"
    assert "FAILED 12m → STARTING 3m → RUNNING (15m in total)" in mail.part("plain")
    assert "RESOLVED node-7 after 15m" in mail.part("html")


# --- one thread per incident (issue 14) -----------------------------------------------------------

INC = "inc_0123456789abcdef0123"


def incident_alert(kind: str, status: str, n: int, *, node: str = "node-7", inc: str = INC,
                   receiver: str = "ops-email") -> Alert:
    ref = IncidentRef(inc, T0 - timedelta(minutes=15), 900.0 if kind == "resolved" else 60.0 * (n + 1),
                      "FAILED 12m → STARTING 3m → RUNNING")
    alert = make_alert(node=node, status=status, receiver=receiver, delivery_id=f"dlv_{n:024d}")
    return replace(alert, kind=kind, incident=ref)


async def test_one_thread_per_incident(smtp_server: SMTPServer) -> None:
    receiver = await email_receiver(smtp_server, {"security": "none"})
    steps = [("firing", "FAILED"), ("update", "STARTING"), ("reminder", "STARTING"), ("escalation", "STARTING"),
             ("acknowledged", "STARTING"), ("resolved", "RUNNING")]
    for n, (kind, status) in enumerate(steps):
        await receiver.send(incident_alert(kind, status, n))
    mails = [m.message for m in smtp_server.messages]
    assert [m["Subject"] for m in mails] == [
        "[FIRING] node-7 is FAILED",
        "[UPDATE] node-7 now STARTING (incident open 2m)",
        "[REMINDER] still STARTING after 3m: node-7",
        "[ESCALATION] ESCALATED node-7: STARTING, open 4m",
        "[ACKNOWLEDGED] node-7: STARTING, open 5m",
        "[RESOLVED] node-7 after 15m",
    ]
    assert [m["X-Alert-Bridge-Delivery"] for m in mails] == [f"dlv_{n:024d}" for n in range(len(steps))]
    root = mails[0]["Message-ID"]
    assert root.startswith(f"<{INC}.r") and root.endswith("@example.test>")
    assert mails[0]["In-Reply-To"] is None and mails[0]["References"] is None
    ids = [m["Message-ID"] for m in mails]
    assert len(set(ids)) == len(ids)
    for m in mails[1:]:
        assert m["In-Reply-To"] == root and m["References"] == root
        assert m["Message-ID"].endswith("@example.test>")


async def test_thread_ids_are_stable_across_receivers_built_again(smtp_server: SMTPServer) -> None:
    """Deterministic: a restarted bridge (or another replica) threads under the same root; another
    receiver has its own ids (one mailbox on both lists must not see one id twice)."""
    first = await email_receiver(smtp_server, {"security": "none"})
    await first.send(incident_alert("firing", "FAILED", 0))
    again = await email_receiver(smtp_server, {"security": "none"})
    await again.send(incident_alert("resolved", "RUNNING", 1))
    await again.send(incident_alert("resolved", "RUNNING", 1))  # a retry: the same Message-ID
    other = await email_receiver(smtp_server, {"security": "none"}, name="pager-email")
    await other.send(incident_alert("firing", "FAILED", 0, receiver="pager-email"))
    firing, resolved, retried, other_firing = (m.message for m in smtp_server.messages)
    assert resolved["In-Reply-To"] == firing["Message-ID"]
    assert retried["Message-ID"] == resolved["Message-ID"]
    assert other_firing["Message-ID"] != firing["Message-ID"]


HOSTILE_HEADER = ["a\r\nBcc: evil@example.test", "x\nSubject: spoof", "<!channel>\r\n\r\nbody", "\u2028Bcc: y@z"]


@pytest.mark.parametrize("value", HOSTILE_HEADER)
async def test_crlf_in_event_values_never_reaches_a_header(value: str, smtp_server: SMTPServer) -> None:
    receiver = await email_receiver(smtp_server, {"security": "none"})
    for n, kind in enumerate(("firing", "update", "resolved")):
        alert = incident_alert(kind, value if kind != "resolved" else "RUNNING", n, node=value)
        await receiver.send(replace(alert, event=replace(alert.event, labels={"team": value})))
    for mail in smtp_server.messages:
        head = mail.data.split(b"\r\n\r\n", 1)[0].decode()
        names = [line.split(":", 1)[0] for line in head.split("\r\n") if line and not line[0].isspace()]
        assert "Bcc" not in names and names.count("Subject") == 1, names
        assert mail.rcpt_tos == TO
        subject = mail.message["Subject"]
        assert "\r" not in subject and "\n" not in subject and "\u2028" not in subject


# --- the raw MIME message (bridge/receivers/mime.py) reads as EmailMessage would have written it ---

MIME_VALUES = [
    "node-prod-1",
    "nöde ☃ with a name long enough that the subject line has to be folded somewhere",
    # An encoded word: the email package's parser decodes it and Python 3.11 then wrote the CR LF raw.
    "=?utf-8?q?=0D=0ABcc:_evil@example.test?=",
    "x" * 120,  # one long word: a body line over 78 characters
    "tab\there & <b>bold</b> = 100%",
    "a\r\nBcc: evil@example.test",
]


@pytest.mark.parametrize("node", MIME_VALUES)
async def test_raw_message_reads_as_the_email_package_writes_it(node: str, smtp_server: SMTPServer) -> None:
    from email.message import EmailMessage

    from bridge.receivers.email import email_content

    receiver = await email_receiver(smtp_server, {"security": "none"})
    base = incident_alert("update", "STARTING", 1, node=node)
    alert = replace(base, event=replace(base.event, labels={"team": node}))
    await receiver.send(alert)
    [mail] = smtp_server.messages
    got = mail.message
    # The reference: the same content through the email package's own header and body encoders.
    cfg = parse({"receivers": {"ops-email": {"type": "email", "to": TO, "from": "Alert Bridge <bridge@example.test>",
                                             "smtp": {"host": "127.0.0.1", "port": 25}}}}, env={})
    content = email_content(Renderer.from_config(cfg), alert, cfg.receivers["ops-email"])  # type: ignore[arg-type]
    ref = EmailMessage()
    ref["From"], ref["To"] = "Alert Bridge <bridge@example.test>", ", ".join(TO)
    ref.set_content(content.text)
    ref.add_alternative(content.html, subtype="html")
    assert got["Subject"] == content.subject  # exactly: an encoded word in a node id is text, not encoding
    assert got["From"] == ref["From"] and got["To"] == ref["To"]
    assert mail.mail_from == "bridge@example.test" and mail.rcpt_tos == TO
    assert got.get_content_type() == "multipart/alternative"
    for subtype in ("plain", "html"):  # line by line: read off the wire, lines end in CRLF
        want = ref.get_body((subtype,)).get_content()  # type: ignore[union-attr]
        assert mail.part(subtype).splitlines() == want.splitlines()
    assert got["In-Reply-To"] == got["References"] and got["In-Reply-To"].startswith(f"<{INC}.r")
    head = mail.data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    names = [line.split(":", 1)[0] for line in head.split("\r\n") if line and not line[0].isspace()]
    assert names.count("Subject") == 1 and "Bcc" not in names, names
    assert all(len(line) <= 998 for line in head.split("\r\n"))  # folded at spaces (a longer word: encoded)
    body = mail.data.split(b"\r\n\r\n", 1)[1]
    assert all(len(line) <= 78 for line in body.split(b"\r\n"))  # 7bit or quoted-printable


async def test_a_lone_surrogate_from_a_template_does_not_fail_the_delivery(smtp_server: SMTPServer) -> None:
    receiver = await email_receiver(smtp_server, {"security": "none"}, text="odd \ud800 {{ node }}")
    await receiver.send(make_alert())
    [mail] = smtp_server.messages
    assert mail.part("plain").splitlines() == ["odd \\ud800 node-prod-1"]


@pytest.mark.parametrize("status", ["down\x00now", "esc\x1b[31m", "del\x7f"])
async def test_control_characters_in_event_values_never_travel_as_7bit(status: str, smtp_server: SMTPServer) -> None:
    """A status is any string a signed event carries: a NUL in a 7bit part breaks RFC 2045 and
    servers refuse or strip it, so such a part is quoted-printable and reads back the same."""
    import re

    receiver = await email_receiver(smtp_server, {"security": "none"})
    await receiver.send(make_alert(status=status))
    [mail] = smtp_server.messages
    assert re.search(rb"[^\t\r\n\x20-\x7e]", mail.data) is None  # every byte on the wire printable
    assert f"node-prod-1 is {status} (was RUNNING" in mail.part("plain")
    assert mail.message["Subject"] == f"[ALERT] node-prod-1 is {status}"


@pytest.mark.parametrize("status", ["x\r\n.\r\nRSET", "x\n.\nQUIT", "x\r.\rQUIT", "\r\n.\r\n"])
async def test_a_lone_dot_line_from_an_event_value_does_not_end_the_message(
    status: str, smtp_server: SMTPServer
) -> None:
    """SMTP ends DATA at a line holding "." alone: every line break we send is CRLF and the line
    is dot-stuffed, so a status cannot end the message early and smuggle a second one."""
    receiver = await email_receiver(smtp_server, {"security": "none"}, text="first\n.\n..\n{{ status }}\nlast")
    await receiver.send(make_alert(status=status))
    await receiver.send(make_alert(status="FAILED"))
    assert len(smtp_server.messages) == 2
    mail = smtp_server.messages[0]
    assert mail.part("plain").splitlines() == f"first\n.\n..\n{status}\nlast".splitlines()


@pytest.mark.parametrize("text", ["[FIRING] " + "y" * 1000, "[FIRING] ünï ☃ " * 20, "[FIRING] odd \ud800 x",
                                  "[FIRING] a =?utf-8?b?QQ==?= b"])
def test_subject_reads_back_exactly(text: str) -> None:
    import email
    import email.policy

    from bridge.receivers.mime import subject

    raw = subject(text)
    assert all(len(line) <= 78 for line in raw.split(b"\r\n"))
    msg = email.message_from_bytes(raw + b"\r\n", policy=email.policy.default)
    assert msg["Subject"] == text.replace("\ud800", "\\ud800")
