# The connector's image: the daemon (`connector run`, the default) or the API (`connector serve`).
#   docker build -t connector .                                  # extras: serve
#   docker build --build-arg EXTRAS=serve,local -t connector:local .   # + the local model (CPU)
# Multi-stage: the build stage makes a virtual environment; the runtime stage copies only that,
# and runs as an unprivileged user.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ARG EXTRAS=serve
# The local model's torch, as a CPU build (PyPI's default is a multi-GB CUDA one).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY migrations ./migrations
COPY connector ./connector
RUN python -m venv /opt/connector \
    && if echo ",${EXTRAS}," | grep -q ",local,"; then \
         /opt/connector/bin/pip install --index-url "${TORCH_INDEX_URL}" torch; fi \
    && /opt/connector/bin/pip install ".[${EXTRAS}]"

FROM python:${PYTHON_VERSION}-slim AS runtime
RUN useradd --system --uid 10001 --home-dir /home/connector --create-home connector
COPY --from=build /opt/connector /opt/connector
ENV PATH=/opt/connector/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HEALTHCHECK_PORT=9108
USER 10001
WORKDIR /home/connector
# 8000: `connector serve`; 9108: the daemon's /metrics, /healthz and /readyz.
EXPOSE 8000 9108
# Both serve /healthz: the daemon on observability.metrics_port, the API on serve.port (set
# HEALTHCHECK_PORT=8000 for it).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['HEALTHCHECK_PORT'], timeout=2)"]
ENTRYPOINT ["connector"]
CMD ["run"]
