# The gateway image (also used for the one-shot `migrate` service in docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
RUN useradd --create-home --uid 10001 sluicegate
# A C compiler builds the engine's decode-attention kernel for the CPU it runs on (first use,
# cached in ~/.cache/sluicegate); without one the engine falls back to slower torch attention.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

# Dependencies first, so code changes do not reinstall torch.
COPY pyproject.toml README.md ./
RUN mkdir -p api auth backends billing cli core inference migrations \
    && pip install . && pip uninstall -y sluicegate

COPY api ./api
COPY auth ./auth
COPY backends ./backends
COPY billing ./billing
COPY cli ./cli
COPY core ./core
COPY inference ./inference
COPY migrations ./migrations
COPY alembic.ini ./
RUN pip install --no-deps . && mkdir -p /app/var && chown sluicegate /app/var

USER sluicegate
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["sluicegate", "serve", "--host", "0.0.0.0", "--port", "8000"]
