# syntax=docker/dockerfile:1
# alert-bridge as a container (a sidecar, or on its own):
#   docker build -t alert-bridge:0.1.0 .
#   docker run --read-only -p 8080:8080 -v alert-bridge-data:/data \
#     -e THUNDERSTACK_API_TOKEN=... -e ALERT_BRIDGE_ADMIN_TOKEN=... alert-bridge:0.1.0
# Config: /etc/alert-bridge/config.yaml (deploy/config.container.yaml; mount your own over it).
# State: /data only (SQLite outbox). Runs as uid 10001; works with a read-only root filesystem.
# tests/test_container.py repeats these steps without a Docker engine; tests/test_deploy.py checks
# that deploy/ agrees with this file.

# --- build: the wheel, then a virtual environment with it and its dependencies ---------------------
FROM python:3.11-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY bridge/ bridge/

# constraints.txt pins every runtime dependency (scripts/constraints writes it): reproducible builds.
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/alert-bridge \
    && /opt/alert-bridge/bin/pip install --no-cache-dir -c constraints.txt /wheels/alert_bridge-*.whl \
    && /opt/alert-bridge/bin/python -m compileall -q /opt/alert-bridge/lib

# --- runtime: the virtual environment, a config, a non-root user, /data ----------------------------
FROM python:3.11-slim

LABEL org.opencontainers.image.title="alert-bridge" \
      org.opencontainers.image.description="Verify ThunderStack webhook events and deliver alerts"

ENV PATH=/opt/alert-bridge/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

RUN groupadd --system --gid 10001 alert-bridge \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin alert-bridge \
    && mkdir -p /data /etc/alert-bridge \
    && chown 10001:10001 /data \
    && chmod 0700 /data

COPY --from=build /opt/alert-bridge /opt/alert-bridge
COPY deploy/config.container.yaml /etc/alert-bridge/config.yaml

USER 10001:10001
WORKDIR /data
VOLUME ["/data"]

# 8080: webhook (publish it); 9091: metrics and admin API (never publish beyond Prometheus).
EXPOSE 8080 9091

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["alert-bridge", "healthcheck", "-c", "/etc/alert-bridge/config.yaml"]

STOPSIGNAL SIGTERM
CMD ["alert-bridge", "serve", "-c", "/etc/alert-bridge/config.yaml"]
