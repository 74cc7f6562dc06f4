# relay gateway image: `docker build -t relay .`
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Defaults for a container; `relay serve` flags win over these.
ENV RELAY_HOST=0.0.0.0 \
    RELAY_PORT=8080

WORKDIR /src
COPY pyproject.toml README.md ./
COPY relay ./relay
# [server] is the gateway; [speed] adds uvloop, which `relay serve` uses when
# importable. hiredis, orjson and uvloop ship manylinux wheels, so no compiler
# is needed.
RUN pip install ".[server,speed]" \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin relay

USER relay
EXPOSE 8080

# Liveness only (/healthz); readiness (/readyz, needs Redis) is checked by compose.
# python:*-slim has no curl or wget, so use urllib; a non-2xx answer raises, exit 1.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]

CMD ["relay", "serve", "--host", "0.0.0.0", "--port", "8080"]
