# The quantcrew ML server: the model families behind FastAPI, torch included.
#
#   CPU (default):  docker build -f deploy/docker/server.Dockerfile -t quantcrew-server .
#   CUDA:           docker build -f deploy/docker/server.Dockerfile -t quantcrew-server:cuda \
#                     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
#
# The CUDA wheels of torch carry their own CUDA libraries; the host needs the NVIDIA driver and the
# container toolkit (compose: deploy.resources.reservations.devices). BASE_IMAGE may name another
# Python 3.11 image.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    QUANTCREW_HOME=/data

RUN useradd --create-home --uid 10001 --user-group quantcrew \
    && mkdir -p /data \
    && chown quantcrew:quantcrew /data

WORKDIR /opt/quantcrew

# torch first, pinned, from the index the build argument names (the Makefile's order): the constrained install
# below then finds it satisfied instead of pulling the default wheel
RUN pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"

COPY pyproject.toml constraints.txt README.md ./
COPY quantcrew ./quantcrew
RUN pip install -c constraints.txt ".[server]"

USER 10001:10001
VOLUME ["/data"]
EXPOSE 8765

# /health is open without the key; the port follows QUANTCREW_SERVER__PORT like the server's own
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('QUANTCREW_SERVER__PORT', '8765'), timeout=4)"]

# a non-loopback bind needs an API key: QUANTCREW_SERVER__API_KEY, or a secret file
# (QUANTCREW_SECRETS_DIR=/run/secrets with /run/secrets/quantcrew_server__api_key); without one it refuses to start
CMD ["quantcrew-server", "--host", "0.0.0.0"]
