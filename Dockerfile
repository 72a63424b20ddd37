# The worker image: `scribe worker` runs every flow and serves /metrics and /health on
# SCRIBE_WEB_PORT. docker-compose.kafka.yml builds it and points it at Kafka, PostgreSQL, Redis.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# The dependencies first, exactly as uv.lock pins them (with their hashes), without the extras:
# the image needs none of the developer tools. The same uv release as the Makefile's exports
# them; it is removed again. This layer is rebuilt only when the lock changes.
COPY pyproject.toml uv.lock ./
RUN pip install --quiet 'uv==0.13.8' \
    && uv export --quiet --frozen --no-dev --no-emit-project --output-file /tmp/requirements.txt \
    && pip uninstall --yes --quiet uv \
    && pip install --require-hashes --requirement /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Then the product, every layer of it (docs/architecture.md): no devkit/, no bench/.
COPY README.md ./
COPY runtime ./runtime
COPY schemas ./schemas
COPY topics ./topics
COPY cache ./cache
COPY sinks ./sinks
COPY agents ./agents
COPY scribe ./scribe
RUN pip install --no-deps . \
    && useradd --system --uid 10001 --home-dir /var/lib/scribe --create-home scribe

USER scribe
ENV SCRIBE_STATE_DIR=/var/lib/scribe \
    SCRIBE_WEB_HOST=0.0.0.0 \
    SCRIBE_WEB_PORT=6066
EXPOSE 6066
CMD ["scribe", "worker"]
