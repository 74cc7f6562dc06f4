# relay gateway image: `docker build -t relay .`
# PYTHON_IMAGE is any image with Python 3.11+ and its venv module; compose
# passes RELAY_PYTHON_IMAGE through, for hosts that build their own base.
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/relay/bin:$PATH

# Defaults for a container; `relay serve` flags win over these.
ENV RELAY_HOST=0.0.0.0 \
    RELAY_PORT=8080

WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
# The browser client's source, which relay/server/static links to.
COPY clients/js/relay-client.js ./clients/js/relay-client.js
COPY relay ./relay
# A virtualenv of its own, so the base image's Python packages stay out of it.
# constraints.txt pins every dependency to the versions the test suite passed
# with. [server] is the gateway; [speed] adds uvloop, which `relay serve` uses
# when importable. hiredis, orjson and uvloop ship manylinux wheels, so no
# compiler is needed.
RUN python3 -m venv /opt/relay \
    && pip install -c constraints.txt ".[server,speed]" \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin relay

USER relay
EXPOSE 8080 9090

# Liveness only (/healthz); readiness (/readyz, needs Redis) is checked by compose.
# Python's urllib, since slim images carry no curl; a non-2xx answer raises, exit 1.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]

CMD ["relay", "serve", "--host", "0.0.0.0", "--port", "8080"]
