"""`scribe gateway`: the HTTP ingest gateway for services that cannot speak Kafka."""

from __future__ import annotations

import asyncio

import click

from runtime.settings import SettingsError
from scribe.cli.settings import resolved_settings


@click.command()
@click.option("--port", type=int, default=None, help="Overrides SCRIBE_GATEWAY_PORT (8080).")
@click.option("--host", default=None, help="Overrides SCRIBE_GATEWAY_HOST (127.0.0.1).")
def gateway(port: int | None, host: str | None) -> None:
    """Serve POST /v1/events/{topic} (one event, a JSON array or NDJSON) and POST
    /v1/cloudevents (structured, batch or binary CloudEvents) with bearer tokens
    (SCRIBE_GATEWAY_TOKENS / SCRIBE_GATEWAY_TOKENS_FILE) and a per-client rate limit."""
    from dataclasses import replace

    from aiohttp import web

    from runtime import tracing
    from runtime.event_loop import EventLoopUnavailableError, running_loop_name, use_event_loop
    from runtime.logs import log_to_stderr
    from scribe.gateway.config import GatewaySettings
    from scribe.gateway.server import AccessLogger, create_app, log
    from topics.admin import ensure_topics

    settings = resolved_settings()
    try:
        config = GatewaySettings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    api_auth = config.api.auth
    if not (config.tokens.clients or api_auth.static or api_auth.jwt.enabled):
        raise click.ClickException(
            "no client tokens: set SCRIBE_GATEWAY_TOKENS=name:token:family|family (or "
            "name:token:*) or SCRIBE_GATEWAY_TOKENS_FILE, and/or the OpenAI-compatible API's "
            "SCRIBE_GATEWAY_API_TOKENS=user:token:tier or SCRIBE_GATEWAY_JWT_KEY / _JWKS_URL; "
            "without one every request gets 401"
        )
    config = replace(config, port=config.port if port is None else port, host=host or config.host)
    try:
        use_event_loop(settings.base.event_loop)
    except EventLoopUnavailableError as exc:
        raise click.ClickException(f"cannot start the gateway: {exc}") from None
    log_to_stderr(settings.base.log_format)
    tracing.configure("scribe-gateway")
    asyncio.run(ensure_topics(settings))
    log.info(
        "gateway on http://%s:%d for clients: %s; %g events/s per client (burst %s)",
        config.host,
        config.port,
        ", ".join(c.name for c in config.tokens.clients),
        config.rate,
        f"{config.burst:,}",
    )
    if api_auth.static or api_auth.jwt.enabled:
        log.info(
            "OpenAI-compatible API at http://%s:%d/v1 for %d static token(s)%s; %g calls/s per "
            "user (burst %d)",
            config.host,
            config.port,
            len(api_auth.static),
            " and JWTs" if api_auth.jwt.enabled else "",
            config.api.rate,
            config.api.burst,
        )
    app = create_app(config, settings)

    async def log_event_loop(_: web.Application) -> None:
        log.info("gateway: running on the %s event loop", running_loop_name())

    app.on_startup.append(log_event_loop)
    web.run_app(
        app,
        host=config.host,
        port=config.port,
        access_log_class=AccessLogger,
        access_log=log,
        print=None,
    )
    tracing.shutdown()  # the spans still buffered are exported
