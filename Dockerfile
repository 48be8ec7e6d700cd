# syntax=docker/dockerfile:1.7
# The operator image: a wheel built in one stage, installed into a clean slim Python in
# the next, so the final image holds no compiler, source tree or build cache.
ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# The test harness (control plane, proxies, fake vendor) is for tests, not for the image.
RUN rm -rf operator/apikey_operator/testing \
    && pip wheel --wheel-dir /wheels ".[vault,aws,azure]"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="apikey-operator" \
      org.opencontainers.image.description="Generates, stores, projects, rotates and revokes API keys" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Install only from the wheels built above (no index), mounted so they leave no layer.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels "$(ls /wheels/apikey_operator-*.whl)[vault,aws,azure]" \
    && groupadd --system --gid 10001 apikey \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin apikey
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080 9090
ENTRYPOINT ["apikey-operator"]
CMD ["run"]
