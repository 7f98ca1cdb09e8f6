# lms-sync: the daemon image (also the worker pool's `lms-sync worker`, and the sandbox vendors
# for the compose `sandbox` and `cluster` profiles).
#   docker build -t lms-sync .
#   docker run --rm -v $PWD/config.yaml:/etc/lms-sync/config.yaml:ro --env-file .env lms-sync
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LMS_SYNC_CONFIG=/etc/lms-sync/config.yaml \
    LMS_SYNC_HEALTH_PORT=8080

WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install '.[postgres,cluster]' \
    && rm -rf /src \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin lms \
    && mkdir -p /etc/lms-sync /data \
    && chown lms /data

USER lms
WORKDIR /data

# /healthz and /metrics on daemon.health_port, which defaults to $LMS_SYNC_HEALTH_PORT (8080)
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('LMS_SYNC_HEALTH_PORT', '8080') + '/healthz', timeout=4)"]

# SIGTERM (docker stop) lets runs in flight commit their batch; exit 0
STOPSIGNAL SIGTERM
CMD ["lms-sync", "daemon"]
