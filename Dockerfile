# syntax=docker/dockerfile:1
# poolgate: one image for one replica or many (docs/deploy.md).
#   docker build -t poolgate .
#   docker run -p 8080:8080 -v poolgate-data:/data poolgate
# The install steps are scripts/wheel-install, which tests/integration/test_packaging.py also runs.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY . .
RUN bash scripts/wheel-install build /wheels

FROM ${PYTHON_IMAGE}
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
# The wheel and the script are mounted for this one step only, so neither stays in the image.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    --mount=type=bind,from=build,source=/src/scripts/wheel-install,target=/tmp/wheel-install \
    bash /tmp/wheel-install venv /opt/poolgate /wheels/poolgate-*.whl
RUN groupadd --system --gid 10001 poolgate \
    && useradd --system --uid 10001 --gid poolgate --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin poolgate \
    && install -d -o poolgate -g poolgate -m 0700 /data

# The SQLite file and the generated encryption key live in /data unless POOLGATE_DATABASE_URL and
# POOLGATE_ENCRYPTION_KEYS(_FILE) point elsewhere, as they do for several replicas (deploy/compose.yaml).
ENV PATH=/opt/poolgate/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    POOLGATE_DATA_DIR=/data \
    POOLGATE_HOST=0.0.0.0 \
    POOLGATE_PORT=8080
VOLUME ["/data"]
WORKDIR /data
USER poolgate
EXPOSE 8080

# Ready means migrated, model views rendered, database answering (app/routes/health.py).
# slim has no curl; urlopen raises on a 503, so the exit code says it all.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('POOLGATE_PORT', '8080'), timeout=4)"]

# `poolgate serve` migrates the database, then serves. Any other command runs the CLI instead:
#   docker run --rm -v poolgate-data:/data poolgate keys create alice --models 'gpt-5*'
ENTRYPOINT ["poolgate"]
CMD ["serve"]
