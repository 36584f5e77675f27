# The operator image. Built elsewhere (no Docker engine on the development machines):
#   docker build -t ghcr.io/modeldeploy/modeldeploy-operator:0.1.0 .
FROM python:3.11-slim AS build
WORKDIR /src
COPY requirements/lock.txt requirements/lock.txt
COPY pyproject.toml README.md ./
COPY operator ./operator
# The operator's own dependencies only (no bentoml), at the locked versions.
RUN pip wheel --wheel-dir /wheels --constraint requirements/lock.txt .

FROM python:3.11-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels modeldeploy && rm -rf /wheels
# The chart runs it as this user with a read-only root filesystem.
USER 65532:65532
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
ENTRYPOINT ["modeldeploy"]
CMD ["run", "--liveness=http://0.0.0.0:8080/healthz"]
