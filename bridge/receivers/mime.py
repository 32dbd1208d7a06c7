"""The email receiver's message as raw bytes, built directly instead of by ``EmailMessage``.

``EmailMessage`` parses every header it is given into the email package's header objects and
folds each again when the message is flattened: for one alert that cost about twice the SMTP
dialogue itself (bench/README.md, "CPU per delivered alert"). Our headers are fixed per receiver
(From, To: folded once by the email package), our own ids reduced to safe characters, the date,
and the subject, which ``subject`` writes so that a reader shows exactly the text we meant.
Bodies are 7bit when ASCII with short lines, else quoted-printable UTF-8, so the message is
7-bit clean whatever the server offers.
"""

from __future__ import annotations

import binascii
import random
import re
from collections.abc import Sequence
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8

from aiosmtplib.email import extract_recipients, extract_sender

_MAX_LINE = 78  # the email package's max_line_length: longer lines are folded or encoded
_AS_IS = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")  # printable ASCII, no outer spaces
_MAX_WORD = 900  # a header line must stay under 998 characters (RFC 5322)
# What a 7bit part may carry: printable ASCII, tab, and the CRLF we write. Not NUL (RFC 2045, 2.7),
# nor other controls: quoted-printable then. Checked by deleting these with bytes.translate (cheap).
_7BIT = bytes([0x09, 0x0A, 0x0D, *range(0x20, 0x7F)])
_WORD_BYTES = 39  # of UTF-8 in one encoded word: 52 in base64, 64 with =?utf-8?b? ?=, 73 after "Subject: "


class Envelope:
    """What is fixed per receiver: the folded From and To lines and the SMTP envelope."""

    def __init__(self, sender: str, to: Sequence[str]) -> None:
        probe = EmailMessage()
        probe["From"] = sender
        probe["To"] = ", ".join(to)
        self.sender = extract_sender(probe) or sender
        self.recipients = extract_recipients(probe)
        self.utf8 = not (self.sender + "".join(self.recipients)).isascii()
        # As aiosmtplib flattened an EmailMessage: UTF-8 headers only when an address needs them.
        policy = SMTPUTF8 if self.utf8 else SMTP
        self.mail_options = ["SMTPUTF8"] if self.utf8 else []
        self.head = policy.fold_binary("From", probe["From"]) + policy.fold_binary("To", probe["To"])



def header(name: str, value: str) -> bytes:
    """One header line of our own ids (``[A-Za-z0-9._@<>-]``: nothing to fold or encode)."""
    return f"{name}: {value}\r\n".encode("ascii")


def subject(text: str) -> bytes:
    """The Subject header for ``text`` (no line breaks: the caller folds whitespace), so that every
    reader shows exactly ``text``: as it is when it is printable ASCII that fits the line, folded at
    spaces when only its length is the matter, else as RFC 2047 encoded words throughout.

    Never through the email package's header parser: it decodes encoded words a value already holds
    (a node id ``=?utf-8?q?=0D=0ABcc:...?=``) and Python 3.11's folder then writes the decoded
    CR LF raw, which starts a header of the attacker's choosing."""
    if "=?" not in text and _AS_IS.fullmatch(text):
        if len(text) <= _MAX_LINE - len("Subject: "):
            return f"Subject: {text}\r\n".encode("ascii")
        words = text.split(" ")
        if max(map(len, words)) <= _MAX_WORD:  # fold before a space: unfolding gives text back
            lines: list[str] = []
            line = "Subject:"
            for word in words:
                if len(line) + 1 + len(word) > _MAX_LINE and line != "Subject:":
                    lines.append(line)
                    line = ""
                line += " " + word
            return ("\r\n".join([*lines, line]) + "\r\n").encode("ascii")
    # Encoded words of at most 39 bytes of UTF-8 each (64 characters encoded), cut between
    # characters; the space that folds them apart is not part of the text (RFC 2047, 6.2).
    chunks: list[bytes] = []
    chunk = b""
    for char in text:
        data = char.encode("utf-8", "backslashreplace")  # a lone surrogate: its \\u escape
        if len(chunk) + len(data) > _WORD_BYTES:
            chunks.append(chunk)
            chunk = b""
        chunk += data
    chunks.append(chunk)
    encoded = [b"=?utf-8?b?" + binascii.b2a_base64(c, newline=False) + b"?=" for c in chunks]
    return b"Subject: " + b"\r\n ".join(encoded) + b"\r\n"


def text_part(subtype: str, text: str) -> bytes:
    """A text/<subtype> UTF-8 part: headers, blank line, body (lines end in CRLF)."""
    # Lines split as the email package splits them (CR, LF, CRLF); a lone surrogate (which a
    # template could write) becomes a \\u escape rather than failing the delivery.
    lines = text.encode("utf-8", "backslashreplace").splitlines()
    body = b"\r\n".join(lines) + b"\r\n"
    # A NUL (a status a signed event may carry) is not 7bit: servers refuse or strip it.
    if all(len(line) <= _MAX_LINE for line in lines) and not body.translate(None, _7BIT):
        cte = b"7bit"
    else:
        cte, body = b"quoted-printable", binascii.b2a_qp(body, istext=True)
    return (b'Content-Type: text/' + subtype.encode() + b'; charset="utf-8"\r\n'
            b"Content-Transfer-Encoding: " + cte + b"\r\n\r\n" + body)


def alternative(headers: bytes, parts: Sequence[bytes]) -> bytes:
    """The whole message: ``headers`` (each line ending in CRLF), then a multipart/alternative of
    ``parts``, with a boundary that no part contains (as the email package picks it)."""
    while True:
        boundary = f"==============={random.randrange(1 << 63):019d}==".encode()
        if not any(boundary in part for part in parts):
            break
    delimiter = b"\r\n--" + boundary + b"\r\n"
    return b"".join([
        headers, b'MIME-Version: 1.0\r\nContent-Type: multipart/alternative;\r\n boundary="', boundary,
        b'"\r\n\r\n--', boundary, b"\r\n", delimiter.join(parts), b"\r\n--", boundary, b"--\r\n",
    ])
