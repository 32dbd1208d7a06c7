"""One hierarchy for every error the bridge raises on purpose.

A leaf module (imports nothing from the package) so every other module can use it
without import loops.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Base of every error the bridge raises deliberately."""


class ConfigError(BridgeError):
    """The configuration is invalid. ``problems`` holds one ``path: message`` per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class RequestError(BridgeError):
    """An inbound webhook request is refused. Maps straight to an HTTP answer."""

    status = 400
    code = "bad_request"

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


class MissingSignature(RequestError):
    status = 401
    code = "missing_signature"


class VerificationError(RequestError):
    """Signature invalid (bad base64 included)."""

    status = 403
    code = "invalid_signature"


class NodeRejected(RequestError):
    """nodeId not allowed, or the nodeIds in path/body/details disagree."""

    status = 403
    code = "node_rejected"

    def __init__(self, detail: str, *, node: str | None = None) -> None:
        super().__init__(detail)
        self.node = node  # the refused node id, for the log line


class PayloadError(RequestError):
    """Body is not a JSON object."""

    status = 400
    code = "invalid_json"


class FieldError(RequestError):
    """A required field is missing or malformed."""

    status = 422
    code = "invalid_field"

    def __init__(self, field: str, detail: str) -> None:
        self.field = field
        super().__init__(f"{field}: {detail}")


class BodyTooLarge(RequestError):
    status = 413
    code = "body_too_large"


class LengthRequired(RequestError):
    """A body without Content-Length (chunked): ThunderStack always sends one."""

    status = 411
    code = "length_required"


class Unavailable(BridgeError):
    """A dependency (public key, storage) is not available; the caller should retry later."""

    public: str | None = None  # what a sender sees instead of ``detail``, where that is internal

    def __init__(self, detail: str, retry_after: float = 5.0) -> None:
        self.detail = detail
        self.retry_after = retry_after
        super().__init__(detail)


class KeyLoadError(BridgeError):
    """A public key could not be loaded or fetched (the reason is safe to log)."""


class KeyUnavailable(Unavailable):
    """No public key is loaded yet."""


class StorageUnavailable(Unavailable):
    """The store cannot be reached or written."""

    # What a sender is told: the detail (a file path, a Redis address, a driver's message) is for
    # operators, in the log and on the admin port's /readyz.
    public = "storage unavailable; retry later"


class DeliveryError(BridgeError):
    """A receiver failed to deliver. Receivers raise a subclass; delivery decides what follows."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class RetryLater(DeliveryError):
    """Transient failure (connection, timeout, 5xx, 429). ``retry_after`` in seconds when the peer said."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class Permanent(DeliveryError):
    """Failure that retrying cannot fix (other 4xx, invalid_auth, SMTP 5xx)."""


class CommandError(BridgeError):
    """A CLI command failed in a way worth one line on stderr; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code
