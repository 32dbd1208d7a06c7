"""The listener's answers made from errors: the JSON shape every refusal shares, and Retry-After."""

from __future__ import annotations

from bridge.errors import KeyUnavailable, NodeRejected, StorageUnavailable, VerificationError
from bridge.reply import Reply, error_reply, unavailable_reply


def test_an_error_reply_names_its_code_and_detail() -> None:
    reply = error_reply(VerificationError("signature does not match"))
    assert reply == Reply(403, {"error": "invalid_signature", "detail": "signature does not match"})
    assert error_reply(NodeRejected("nodeId is not one of the configured nodes", node="x")).status == 403


def test_unavailable_says_when_to_retry_in_whole_seconds_never_zero() -> None:
    assert unavailable_reply(StorageUnavailable("locked", retry_after=0.2)).headers == {"Retry-After": "1"}
    reply = unavailable_reply(StorageUnavailable("locked", retry_after=7.6))
    assert reply.status == 503 and reply.headers == {"Retry-After": "8"}
    assert reply.body == {"error": "unavailable", "detail": "storage unavailable; retry later"}


def test_a_sender_is_not_told_where_the_storage_is() -> None:
    exc = StorageUnavailable("redis unavailable: Error 111 connecting to 10.0.0.7:6379. Connection refused.")
    assert "10.0.0.7" not in str(unavailable_reply(exc).body)
    assert unavailable_reply(KeyUnavailable("no public key loaded yet")).body["detail"] == "no public key loaded yet"
