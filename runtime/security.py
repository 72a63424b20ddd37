"""Security settings for the three services, and keeping their secrets out of every output.

Secrets come only from the environment: `SCRIBE_X_PASSWORD`, or `SCRIBE_X_PASSWORD_FILE` naming a
file that holds it (a mounted Kubernetes/Docker secret). Each setting maps to the keyword
arguments of the client that needs it (aiokafka, Faust, asyncpg, redis-py), so one place
decides what every client of the pipeline uses.

| variable | meaning |
|---|---|
| SCRIBE_KAFKA_SECURITY_PROTOCOL | PLAINTEXT (default), SSL, SASL_PLAINTEXT, SASL_SSL |
| SCRIBE_KAFKA_SASL_MECHANISM | SCRAM-SHA-512 (default with SASL), SCRAM-SHA-256, PLAIN |
| SCRIBE_KAFKA_SASL_USERNAME, SCRIBE_KAFKA_SASL_PASSWORD(_FILE) | SASL credentials |
| SCRIBE_KAFKA_SSL_CAFILE | CA bundle that signed the brokers' certificates |
| SCRIBE_KAFKA_SSL_CERTFILE, SCRIBE_KAFKA_SSL_KEYFILE | client certificate (mutual TLS) |
| SCRIBE_DATABASE_PASSWORD(_FILE) | PostgreSQL password (or in SCRIBE_DATABASE_URL) |
| SCRIBE_DATABASE_SSLMODE | disable, prefer, require, verify-ca, verify-full |
| SCRIBE_DATABASE_SSLROOTCERT | CA bundle for verify-ca / verify-full |
| SCRIBE_REDIS_USERNAME, SCRIBE_REDIS_PASSWORD(_FILE) | Redis ACL user and password |
| SCRIBE_REDIS_SSL_CAFILE | CA bundle for a `rediss://` URL |
"""

from __future__ import annotations

import logging
import os
import re
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MASK = "***"


class SecuritySettingsError(ValueError):
    """A security setting is missing, contradictory or unreadable; the message names it."""


class Secret:
    """A value that prints as `***` (repr, str, f-strings, logs); `reveal()` gives it to a
    client library and nowhere else."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def read_secret(name: str, env: Mapping[str, str]) -> Secret | None:
    """`NAME` or the contents of the file `NAME_FILE` (one trailing newline dropped)."""
    direct = env.get(name) or None
    path = env.get(f"{name}_FILE") or None
    if direct is not None and path is not None:
        raise SecuritySettingsError(f"set {name} or {name}_FILE, not both")
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise SecuritySettingsError(
                f"{name}_FILE: cannot read {path}: {exc.strerror}"
            ) from None
        return Secret(text.removesuffix("\n"))
    return Secret(direct) if direct is not None else None


def mask_url(url: str) -> str:
    """The URL with its password (if any) replaced by `***`, for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    if parts.password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))


def url_password(url: str | None) -> Secret | None:
    if not url:
        return None
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return Secret(password) if password else None


def _file(name: str, env: Mapping[str, str]) -> str | None:
    path = env.get(name) or None
    if path is not None and not Path(path).is_file():
        raise SecuritySettingsError(f"{name}: {path} is not a readable file")
    return path


KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
PG_SSLMODES = ("disable", "prefer", "require", "verify-ca", "verify-full")


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KafkaSecurity:
        protocol = (env.get("SCRIBE_KAFKA_SECURITY_PROTOCOL") or "PLAINTEXT").upper()
        if protocol not in KAFKA_PROTOCOLS:
            raise SecuritySettingsError(
                f"SCRIBE_KAFKA_SECURITY_PROTOCOL: {protocol!r} is not one of "
                f"{', '.join(KAFKA_PROTOCOLS)}"
            )
        username = env.get("SCRIBE_KAFKA_SASL_USERNAME") or None
        password = read_secret("SCRIBE_KAFKA_SASL_PASSWORD", env)
        mechanism = env.get("SCRIBE_KAFKA_SASL_MECHANISM") or None
        if protocol.startswith("SASL_"):
            mechanism = (mechanism or "SCRAM-SHA-512").upper()
            if mechanism not in SASL_MECHANISMS:
                raise SecuritySettingsError(
                    f"SCRIBE_KAFKA_SASL_MECHANISM: {mechanism!r} is not one of "
                    f"{', '.join(SASL_MECHANISMS)}"
                )
            if username is None or password is None:
                raise SecuritySettingsError(
                    f"SCRIBE_KAFKA_SECURITY_PROTOCOL={protocol} needs "
                    "SCRIBE_KAFKA_SASL_USERNAME and SCRIBE_KAFKA_SASL_PASSWORD(_FILE)"
                )
        elif username or password or mechanism:
            raise SecuritySettingsError(
                "SASL credentials are set but SCRIBE_KAFKA_SECURITY_PROTOCOL is "
                f"{protocol}; use SASL_SSL (or SASL_PLAINTEXT) or unset them"
            )
        return cls(
            protocol=protocol,
            sasl_mechanism=mechanism,
            sasl_username=username,
            sasl_password=password,
            ssl_cafile=_file("SCRIBE_KAFKA_SSL_CAFILE", env),
            ssl_certfile=_file("SCRIBE_KAFKA_SSL_CERTFILE", env),
            ssl_keyfile=_file("SCRIBE_KAFKA_SSL_KEYFILE", env),
        )

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.uses_tls:
            return None
        context = ssl.create_default_context(cafile=self.ssl_cafile)
        if self.ssl_certfile:
            context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
        return context

    def aiokafka_kwargs(self) -> dict[str, Any]:
        """For AIOKafkaProducer, AIOKafkaConsumer and AIOKafkaAdminClient."""
        kwargs: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_tls:
            kwargs["ssl_context"] = self.ssl_context()
        if self.sasl_mechanism is not None:
            assert self.sasl_password is not None
            kwargs.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password.reveal(),
            )
        return kwargs

    def faust_credentials(self) -> Any:
        """Faust's `broker_credentials`, or None for PLAINTEXT."""
        import faust

        if self.sasl_mechanism is not None:
            assert self.sasl_password is not None
            return faust.SASLCredentials(
                username=self.sasl_username,
                password=self.sasl_password.reveal(),
                ssl_context=self.ssl_context(),
                mechanism=self.sasl_mechanism,
            )
        if self.uses_tls:
            return faust.SSLCredentials(self.ssl_context())
        return None


@dataclass(frozen=True)
class PostgresSecurity:
    password: Secret | None = None
    sslmode: str | None = None
    sslrootcert: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PostgresSecurity:
        mode = env.get("SCRIBE_DATABASE_SSLMODE") or None
        if mode is not None and mode not in PG_SSLMODES:
            raise SecuritySettingsError(
                f"SCRIBE_DATABASE_SSLMODE: {mode!r} is not one of {', '.join(PG_SSLMODES)}"
            )
        root = _file("SCRIBE_DATABASE_SSLROOTCERT", env)
        if root is not None and mode not in ("verify-ca", "verify-full"):
            raise SecuritySettingsError(
                "SCRIBE_DATABASE_SSLROOTCERT needs SCRIBE_DATABASE_SSLMODE=verify-ca or verify-full"
            )
        return cls(read_secret("SCRIBE_DATABASE_PASSWORD", env), mode, root)

    def asyncpg_kwargs(self) -> dict[str, Any]:
        """For asyncpg.connect / create_pool (the DSN may carry its own password and sslmode)."""
        kwargs: dict[str, Any] = {}
        if self.password is not None:
            kwargs["password"] = self.password.reveal()
        if self.sslmode in ("verify-ca", "verify-full") and self.sslrootcert:
            context = ssl.create_default_context(cafile=self.sslrootcert)
            context.check_hostname = self.sslmode == "verify-full"
            kwargs["ssl"] = context
        elif self.sslmode is not None:
            kwargs["ssl"] = self.sslmode
        return kwargs


@dataclass(frozen=True)
class RedisSecurity:
    username: str | None = None
    password: Secret | None = None
    ssl_cafile: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RedisSecurity:
        return cls(
            env.get("SCRIBE_REDIS_USERNAME") or None,
            read_secret("SCRIBE_REDIS_PASSWORD", env),
            _file("SCRIBE_REDIS_SSL_CAFILE", env),
        )

    def redis_kwargs(self, url: str) -> dict[str, Any]:
        """For redis.asyncio.from_url(url, ...): TLS options only apply to `rediss://`."""
        kwargs: dict[str, Any] = {}
        if self.username is not None:
            kwargs["username"] = self.username
        if self.password is not None:
            kwargs["password"] = self.password.reveal()
        if self.ssl_cafile is not None:
            if urlsplit(url).scheme != "rediss":
                raise SecuritySettingsError(
                    "SCRIBE_REDIS_SSL_CAFILE is set but SCRIBE_REDIS_URL is not rediss://"
                )
            kwargs.update(ssl_ca_certs=self.ssl_cafile, ssl_cert_reqs="required")
        return kwargs


@dataclass(frozen=True)
class Security:
    kafka: KafkaSecurity = field(default_factory=KafkaSecurity)
    postgres: PostgresSecurity = field(default_factory=PostgresSecurity)
    redis: RedisSecurity = field(default_factory=RedisSecurity)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Security:
        env = os.environ if env is None else env
        return cls(
            KafkaSecurity.from_env(env), PostgresSecurity.from_env(env), RedisSecurity.from_env(env)
        )

    def secrets(self, urls: Iterable[str | None] = ()) -> list[str]:
        """Every secret value known: what the log filter must never let through."""
        found = [self.kafka.sasl_password, self.postgres.password, self.redis.password]
        found.extend(url_password(url) for url in urls)
        return [s.reveal() for s in found if s is not None and s.reveal()]


class Redactor:
    """Replaces secret values (and URL passwords) in log records when they are created, so no
    handler, formatter or third-party logger can print them."""

    def __init__(self, secrets: Iterable[str]) -> None:
        ordered = sorted({s for s in secrets if s}, key=len, reverse=True)
        self.pattern = re.compile("|".join(re.escape(s) for s in ordered)) if ordered else None

    def redact(self, text: str) -> str:
        return self.pattern.sub(MASK, text) if self.pattern is not None else text

    def install(self) -> None:
        previous = logging.getLogRecordFactory()
        if self.pattern is None:
            return

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            message = record.getMessage()
            cleaned = self.redact(message)
            if cleaned != message:
                # The template goes with the arguments; the repeat limiter still groups the
                # record by it (`runtime.logs`), so it is kept, cleaned too.
                record.redacted_template = self.redact(str(record.msg))
                record.msg, record.args = cleaned, None
            if record.exc_info and record.exc_info[1] is not None:
                text = logging.Formatter().formatException(record.exc_info)
                record.exc_text = self.redact(text)
            return record

        logging.setLogRecordFactory(factory)
