# The operator image: `tenant-operator run` on a slim Python, as a non-root user, on a
# read-only root filesystem (nothing is written outside /tmp).
#
#   docker build --build-arg REVISION=$(git rev-parse HEAD) -t ghcr.io/tenant-operator/tenant-operator:0.1.0 .
#
# pg_dump and pg_restore (tier migrations, reclaimPolicy Snapshot) refuse servers of a newer
# major version than their own. Debian 12 ships 15; for PostgreSQL 16 or 17 build on Debian 13:
#   docker build --build-arg BASE=python:3.11-slim-trixie ...
#
# The base image should be pinned by digest as well as by tag (tag@sha256:...), so that a
# rebuild uses the same base until the pin moves on purpose: hack/pin-base-image.sh asks the
# registry for the digest and writes it here. It is not pinned yet: the machines this
# project is built on reach no container registry, and a digest copied from elsewhere could
# not be checked. Run the script before building a release.
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/tenant-operator
WORKDIR /src
COPY requirements-image.txt pyproject.toml LICENSE ./
COPY operator/ operator/
# Exactly the files of requirements-image.txt (hack/lock-image.sh), each checked against its
# sha256: the versions of constraints.txt, which the tests run. Then the operator's own package,
# built with that lock's setuptools and nothing fetched (no build isolation, no index). Bytecode
# is compiled now, since the running container cannot write it.
RUN /opt/tenant-operator/bin/pip install --require-hashes --no-deps -r requirements-image.txt \
 && /opt/tenant-operator/bin/pip install --no-deps --no-build-isolation --no-index . \
 && /opt/tenant-operator/bin/pip check \
 && /opt/tenant-operator/bin/python -m compileall -q /opt/tenant-operator

FROM ${BASE}
# The version is tenant_operator.__version__ (a test keeps this default equal to it); REVISION is the
# commit: docker build --build-arg REVISION=$(git rev-parse HEAD) .
ARG VERSION=0.1.0
ARG REVISION=""
LABEL org.opencontainers.image.title="tenant-operator" \
      org.opencontainers.image.description="Kubernetes operator: a Tenant becomes its namespace, PostgreSQL schema or database, quotas, access rules and workloads" \
      org.opencontainers.image.source="https://github.com/tenant-operator/tenant-operator" \
      org.opencontainers.image.url="https://github.com/tenant-operator/tenant-operator" \
      org.opencontainers.image.documentation="https://github.com/tenant-operator/tenant-operator/tree/main/docs" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# pg_dump and pg_restore for tier migrations and snapshots; psql for debugging from inside the pod.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-client \
 && rm -rf /var/lib/apt/lists/*
# A numeric user, so that Kubernetes can verify runAsNonRoot; the chart runs as the same uid.
RUN groupadd --system --gid 10001 tenant-operator \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin tenant-operator
COPY --from=build /opt/tenant-operator /opt/tenant-operator
ENV PATH=/opt/tenant-operator/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 10001:10001
WORKDIR /tmp
# 8080: Prometheus metrics (TENANT_OPERATOR_METRICS_PORT); 8081: /healthz and /readyz
# (TENANT_OPERATOR_HEALTH_PORT).
EXPOSE 8080 8081
ENTRYPOINT ["tenant-operator"]
CMD ["run", "--standalone", "--health-port=8081"]
