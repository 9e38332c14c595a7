# syntax=docker/dockerfile:1
# exportd image: one image for masters (`exportd-master`) and export servers (`exportd-server`);
# the Helm chart (helm/exportd) picks the command. Build from the repository root:
#   docker build -t exportd:0.1.0 .
#
# Two stages: the builder installs the package and its runtime dependencies (no dev extra) into
# a virtualenv at /opt/exportd; the runtime stage copies only that virtualenv onto a clean
# python:3.11-slim and runs as an unprivileged user. Every dependency ships manylinux wheels
# (grpcio, confluent-kafka with librdkafka, zstandard, psutil), so no compiler is needed.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# Same path as in the runtime stage: a virtualenv's scripts name their interpreter by path.
RUN python -m venv /opt/exportd
ENV PATH=/opt/exportd/bin:$PATH
WORKDIR /src

# Dependencies first, in their own layer: it is rebuilt only when pyproject.toml changes.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('/tmp/requirements.txt', 'w').write('\n'.join(deps) + '\n')" \
 && pip install --upgrade pip \
 && pip install -r /tmp/requirements.txt

# Then the code, installed as a regular (non-editable) package, without touching the deps again.
COPY proto ./proto
COPY scheduler ./scheduler
COPY master ./master
COPY server ./server
COPY tasks ./tasks
COPY tools ./tools
RUN pip install --no-deps . \
 && python -m compileall -q /opt/exportd/lib \
 && exportd-master --help >/dev/null \
 && exportd-server --help >/dev/null

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="exportd" \
      org.opencontainers.image.description="Exports data from Kafka to S3, HTTP endpoints, files and other topics" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 exportd \
 && useradd --system --uid 10001 --gid exportd --home-dir /var/lib/exportd \
      --shell /usr/sbin/nologin exportd \
 && mkdir -p /var/lib/exportd /etc/exportd \
 && chown exportd:exportd /var/lib/exportd
COPY --from=builder /opt/exportd /opt/exportd
ENV PATH=/opt/exportd/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /var/lib/exportd
# Master HTTP API and gRPC Coordinator; server HTTP (/healthz, /readyz, /metrics).
EXPOSE 8080 9400 8090
# The processes handle SIGTERM themselves (a master releases leadership, a server drains).
CMD ["exportd-master", "--config", "/etc/exportd/config.yaml"]
