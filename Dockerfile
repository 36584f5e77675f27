# The operator image.
#
# Elsewhere: docker build -t <registry>/modeldeploy-operator:0.1.0 .
# Here (no Docker engine): the local cluster builds it with buildah on its own Debian base image,
#   buildah bud --build-arg BASE_IMAGE=registry.localhost/modeldeploy/python-base:3.11-<digest> .
# (`python -m localcluster images operator`, which `make up` runs).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY requirements/lock.txt requirements/lock.txt
COPY pyproject.toml README.md ./
COPY operator ./operator
# The operator's own dependencies only (no bentoml), at the locked versions, into a venv (a
# Debian base's system Python refuses pip installs: PEP 668).
RUN python3 -m venv /opt/modeldeploy \
    && /opt/modeldeploy/bin/pip install --no-cache-dir --disable-pip-version-check --quiet \
        --constraint requirements/lock.txt .

FROM ${BASE_IMAGE}
COPY --from=build /opt/modeldeploy /opt/modeldeploy
# The chart runs it as this user with a read-only root filesystem. The user has a passwd entry:
# kopf names its operator instance after the user (getpass.getuser()), which fails without one.
RUN groupadd --gid 65532 modeldeploy \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin modeldeploy
USER 65532:65532
ENV PATH=/opt/modeldeploy/bin:/usr/local/bin:/usr/bin:/bin PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
ENTRYPOINT ["modeldeploy"]
CMD ["run", "--liveness=http://0.0.0.0:8080/healthz"]
