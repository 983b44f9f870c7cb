# The light agent side: the CLI, the crews, the scheduler; no torch, no server extra.
# It talks to an ML server over HTTP (QUANTCREW_CLIENT__URL) with the API key from a secret file.
#
#   docker build -f deploy/docker/agent.Dockerfile -t quantcrew-agent .
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

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

COPY pyproject.toml constraints.txt README.md ./
COPY quantcrew ./quantcrew
RUN pip install -c constraints.txt .

USER 10001:10001
VOLUME ["/data"]

# the stored schedules (add them with `quantcrew schedule add`) until SIGTERM; a run in flight gets up to 90 s
# to finish and is recorded either way
CMD ["quantcrew", "scheduler", "--stop-timeout", "90"]
