"""The ``server:`` section (listeners, TLS, admin token) and where this host reaches a listener.

A module of its own so that the commands that read only ``server:`` (``healthcheck``, ``reload``:
bridge/commands/common.py ``server_section``) import neither the receivers' models nor the loader;
it imports nothing of bridge.config but ``base``.
"""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator, model_validator

from bridge.config.base import Duration, FilePath, HostPort, SecretFiles, Strict, split_host_port

__all__ = ["ServerConfig", "TLSConfig", "local_url"]


class TLSConfig(Strict):
    cert_file: FilePath
    key_file: FilePath


class ServerConfig(SecretFiles):
    _secret_fields = ("admin_token",)
    listen: HostPort = "127.0.0.1:8080"
    admin_listen: HostPort = "127.0.0.1:9091"
    path: str = "/webhook"
    max_body_bytes: int = Field(65536, ge=256, le=16 * 1024 * 1024)
    # A body without Content-Length (chunked) is refused with 411: each chunk costs CPU before any
    # signature holds. Behind a proxy that forwards requests chunked, allow it here.
    accept_chunked: bool = False
    tls: TLSConfig | None = None
    # A client that has not sent its whole body by then is cut off (slowloris).
    body_timeout: Duration = 10.0
    # A connection that has not sent a complete request line and headers for this long is closed:
    # idle keep-alive connections, and clients that never finish their headers (slowloris).
    idle_timeout: Duration = 15.0
    shutdown_grace: Duration = 10.0
    # Bearer token for the admin listener (all but /healthz, /readyz and, when metrics_public, /metrics).
    admin_token: SecretStr | None = None
    admin_token_file: str | None = None
    metrics_public: bool = False

    @field_validator("admin_token")
    @classmethod
    def _token(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and (len(v.get_secret_value()) < 16 or not v.get_secret_value().isprintable()
                              or " " in v.get_secret_value()):
            raise ValueError("must be at least 16 printable characters without spaces "
                             "(e.g. the output of: openssl rand -hex 32)")
        return v

    @field_validator("idle_timeout", "body_timeout")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be longer than 0 (a client could otherwise hold a connection forever)")
        return v

    @model_validator(mode="after")
    def _two_ports(self) -> ServerConfig:
        host, port = split_host_port(self.listen)
        ahost, aport = split_host_port(self.admin_listen)
        anywhere = ("", "0.0.0.0", "::")
        if port and port == aport and (host == ahost or host in anywhere or ahost in anywhere):
            raise ValueError(f"admin_listen ({self.admin_listen}) and listen ({self.listen}) are the same port: the "
                             "bridge could not start; give the admin listener a port of its own (its default is "
                             "127.0.0.1:9091)")
        return self

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/") or (v.endswith("/") and v != "/"):
            raise ValueError("must start with '/' and not end with '/', e.g. /webhook")
        return v


def local_url(listen: str, *, scheme: str = "http") -> str | None:
    """Where this host reaches a listener bound to ``listen`` (a wildcard bind is reached on
    loopback); None when the port is 0 (chosen at start, unknown here)."""
    host, port = split_host_port(listen)
    if port == 0:
        return None
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"
