# syntax=docker/dockerfile:1
# One image for every role: `ucwa-bridge api|worker|poller` (and `python -m ucwasim` for demos).
#
#   docker build -t ucwa-bridge .
#   docker run --rm --env-file .env -p 8080:8080 ucwa-bridge api --bind 0.0.0.0:8080

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a wheel of the project, installed with its runtime dependencies into a venv ----
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bridge ./bridge
COPY workers ./workers
COPY ucwasim ./ucwasim
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install /wheels/*.whl \
    && /opt/venv/bin/pip uninstall --yes pip setuptools

# ---- runtime: the venv only, no compiler, no build tools, no dev or test dependencies ----
FROM ${PYTHON_IMAGE} AS runtime
ARG UID=10001
ARG GID=10001
LABEL org.opencontainers.image.title="ucwa-bridge" \
      org.opencontainers.image.description="Skype for Business IMs over UCWA 2.0 with signed webhooks" \
      org.opencontainers.image.licenses="MIT"
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH
RUN groupadd --system --gid "${GID}" ucwa \
    && useradd --system --uid "${UID}" --gid "${GID}" --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin ucwa
COPY --from=build /opt/venv /opt/venv
# Numeric so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["ucwa-bridge"]
CMD ["api", "--bind", "0.0.0.0:8080"]
