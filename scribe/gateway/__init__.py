"""The HTTP ingest gateway: services that cannot speak Kafka publish validated events over
HTTP. `access` (tokens), `ingest` (bodies, validation) and `ratelimit` (the shared token
bucket) hold the logic; `server` wires them into aiohttp; `config` reads the settings."""
