# The worker image: `scribe worker` runs every agent and serves /metrics and /health on
# SCRIBE_WEB_PORT. docker-compose.kafka.yml builds it and points it at Kafka, PostgreSQL, Redis.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml ./
COPY schemas ./schemas
COPY topics ./topics
COPY agents ./agents
COPY sinks ./sinks
COPY scribe ./scribe
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /var/lib/scribe --create-home scribe

USER scribe
ENV SCRIBE_STATE_DIR=/var/lib/scribe \
    SCRIBE_WEB_HOST=0.0.0.0 \
    SCRIBE_WEB_PORT=6066
EXPOSE 6066
CMD ["scribe", "worker"]
