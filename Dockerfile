# One image for every tradebot service; docker-compose.yml gives each container its command
# (`python -m services.<name>`). docs/deployment.md explains the build.

# Builder: a venv with the dependencies from requirements.lock alone (exact versions, hashes
# checked, wheels only). This layer is rebuilt only when the lock file changes.
FROM python:3.11.17-slim-bookworm AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements.lock /tmp/requirements.lock
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir pip==26.3 \
    && /opt/venv/bin/pip install --no-cache-dir --only-binary=:all: -r /tmp/requirements.lock

# Final: the venv, then the source. A code change rebuilds only the layers from the source
# on; the project is installed --no-deps (editable: its one copy is /app) by the setuptools
# pinned in the lock, offline.
FROM python:3.11.17-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TB_LOG_DIR=/app/logs \
    TB_DATA_DIR=/app/data
RUN groupadd --system --gid 10001 tradebot \
    && useradd --system --uid 10001 --gid tradebot --no-log-init --home-dir /app \
        --shell /usr/sbin/nologin tradebot
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
RUN pip install --no-cache-dir --no-deps --no-build-isolation --no-index -e . \
    && python -m compileall -q shared services \
    && mkdir -p /app/logs /app/data \
    && chown tradebot:tradebot /app/logs /app/data
USER 10001:10001
# Healthy while the service in this container beats (its heartbeat metric is under 15 s old);
# the simulator's container overrides it with `tradebot health --exchange-sim`.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 CMD ["tradebot", "health"]
CMD ["tradebot", "--help"]
