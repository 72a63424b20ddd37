"""Security settings map to the right client options; secrets never print."""

from __future__ import annotations

import logging
import ssl
import subprocess
from pathlib import Path

import faust
import pytest

from runtime.security import (
    KafkaSecurity,
    PostgresSecurity,
    Redactor,
    RedisSecurity,
    Secret,
    Security,
    SecuritySettingsError,
    mask_url,
    read_secret,
)
from runtime.settings import Settings, SettingsError
from scribe.app import faust_settings

SASL = {
    "SCRIBE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "SCRIBE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
    "SCRIBE_KAFKA_SASL_USERNAME": "scribe",
    "SCRIBE_KAFKA_SASL_PASSWORD": "kafka-pw-4711",
}


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-signed CA certificate, made with the openssl command line."""
    folder = tmp_path_factory.mktemp("ca")
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=scribe-test-ca", "-keyout", str(folder / "ca.key"),
            "-out", str(folder / "ca.pem"),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return folder / "ca.pem"


def test_a_secret_never_prints() -> None:
    secret = Secret("hunter2")
    assert "hunter2" not in repr(secret)
    assert "hunter2" not in str(secret)
    assert "hunter2" not in f"{secret} {secret!r}"
    assert secret.reveal() == "hunter2"


def test_secret_from_a_file_drops_one_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("s3cret\n")
    secret = read_secret("SCRIBE_REDIS_PASSWORD", {"SCRIBE_REDIS_PASSWORD_FILE": str(path)})
    assert secret is not None and secret.reveal() == "s3cret"


def test_secret_and_its_file_together_are_refused(tmp_path: Path) -> None:
    env = {"SCRIBE_REDIS_PASSWORD": "a", "SCRIBE_REDIS_PASSWORD_FILE": str(tmp_path)}
    with pytest.raises(SecuritySettingsError, match="not both"):
        read_secret("SCRIBE_REDIS_PASSWORD", env)


def test_unreadable_secret_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SecuritySettingsError, match="SCRIBE_DATABASE_PASSWORD_FILE"):
        read_secret("SCRIBE_DATABASE_PASSWORD", {"SCRIBE_DATABASE_PASSWORD_FILE": "/nonexistent"})


def test_plaintext_is_the_default_and_adds_nothing_but_the_protocol() -> None:
    kafka = KafkaSecurity.from_env({})
    assert kafka.aiokafka_kwargs() == {"security_protocol": "PLAINTEXT"}
    assert kafka.faust_credentials() is None


def test_sasl_ssl_scram_maps_to_aiokafka_and_faust(ca_file: Path) -> None:
    kafka = KafkaSecurity.from_env({**SASL, "SCRIBE_KAFKA_SSL_CAFILE": str(ca_file)})
    kwargs = kafka.aiokafka_kwargs()
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-256"
    assert kwargs["sasl_plain_username"] == "scribe"
    assert kwargs["sasl_plain_password"] == "kafka-pw-4711"
    context = kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert any(
        c["subject"] == ((("commonName", "scribe-test-ca"),),) for c in context.get_ca_certs()
    )

    credentials = kafka.faust_credentials()
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.mechanism.value == "SCRAM-SHA-256"
    assert str(credentials.protocol.value) == "SASL_SSL"
    assert credentials.password == "kafka-pw-4711"
    assert "kafka-pw-4711" not in repr(credentials)


def test_scram_sha_512_is_the_default_mechanism() -> None:
    env = {k: v for k, v in SASL.items() if k != "SCRIBE_KAFKA_SASL_MECHANISM"}
    assert KafkaSecurity.from_env(env).aiokafka_kwargs()["sasl_mechanism"] == "SCRAM-SHA-512"


def test_tls_without_sasl_maps_to_ssl_credentials(ca_file: Path) -> None:
    kafka = KafkaSecurity.from_env(
        {"SCRIBE_KAFKA_SECURITY_PROTOCOL": "SSL", "SCRIBE_KAFKA_SSL_CAFILE": str(ca_file)}
    )
    assert kafka.aiokafka_kwargs()["security_protocol"] == "SSL"
    assert "sasl_mechanism" not in kafka.aiokafka_kwargs()
    assert isinstance(kafka.faust_credentials(), faust.SSLCredentials)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SCRIBE_KAFKA_SECURITY_PROTOCOL": "TLS"}, "not one of"),
        ({"SCRIBE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs SCRIBE_KAFKA_SASL_USERNAME"),
        ({**SASL, "SCRIBE_KAFKA_SASL_MECHANISM": "GSSAPI"}, "not one of"),
        ({"SCRIBE_KAFKA_SASL_PASSWORD": "x"}, "SASL credentials are set"),
        ({"SCRIBE_KAFKA_SSL_CAFILE": "/nonexistent.pem"}, "not a readable file"),
    ],
)
def test_contradictory_kafka_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(SecuritySettingsError, match=message):
        KafkaSecurity.from_env(env)


def test_postgres_password_and_tls_map_to_asyncpg(ca_file: Path) -> None:
    pg = PostgresSecurity.from_env(
        {
            "SCRIBE_DATABASE_PASSWORD": "pg-pw",
            "SCRIBE_DATABASE_SSLMODE": "verify-ca",
            "SCRIBE_DATABASE_SSLROOTCERT": str(ca_file),
        }
    )
    kwargs = pg.asyncpg_kwargs()
    assert kwargs["password"] == "pg-pw"
    assert isinstance(kwargs["ssl"], ssl.SSLContext)
    assert kwargs["ssl"].verify_mode == ssl.CERT_REQUIRED
    assert not kwargs["ssl"].check_hostname  # verify-ca: the CA, not the host name
    assert PostgresSecurity.from_env({"SCRIBE_DATABASE_SSLMODE": "require"}).asyncpg_kwargs() == {
        "ssl": "require"
    }
    assert PostgresSecurity.from_env({}).asyncpg_kwargs() == {}
    with pytest.raises(SecuritySettingsError, match="verify-ca or verify-full"):
        PostgresSecurity.from_env({"SCRIBE_DATABASE_SSLROOTCERT": str(ca_file)})


def test_redis_password_and_tls_map_to_redis_py(ca_file: Path) -> None:
    env = {
        "SCRIBE_REDIS_USERNAME": "scribe",
        "SCRIBE_REDIS_PASSWORD": "redis-pw",
        "SCRIBE_REDIS_SSL_CAFILE": str(ca_file),
    }
    kwargs = RedisSecurity.from_env(env).redis_kwargs("rediss://cache:6380/0")
    assert kwargs == {
        "username": "scribe",
        "password": "redis-pw",
        "ssl_ca_certs": str(ca_file),
        "ssl_cert_reqs": "required",
    }
    with pytest.raises(SecuritySettingsError, match="not rediss://"):
        RedisSecurity.from_env(env).redis_kwargs("redis://cache:6379/0")


def test_faust_app_gets_the_broker_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        **SASL,
        "SCRIBE_KAFKA_URL": "kafka://broker:9093",
        "SCRIBE_DATABASE_URL": "postgresql://scribe:pg-url-pw@db/scribe",
        "SCRIBE_REDIS_URL": "redis://cache:6379/0",
    }.items():
        monkeypatch.setenv(name, value)
    resolved = Settings.from_env().require()
    config = faust_settings(resolved)
    assert isinstance(config["broker_credentials"], faust.SASLCredentials)
    assert resolved.kafka_client_options["sasl_plain_password"] == "kafka-pw-4711"
    assert set(resolved.secrets) == {"kafka-pw-4711", "pg-url-pw"}


def test_settings_errors_mask_url_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCRIBE_DATABASE_URL", "mysql://scribe:pg-url-pw@db/scribe")
    with pytest.raises(SettingsError) as caught:
        Settings.from_env()
    assert "pg-url-pw" not in str(caught.value)
    assert "scribe:***@db" in str(caught.value)


def test_mask_url() -> None:
    assert mask_url("postgresql://u:p%40ss@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert mask_url("rediss://:pw@cache:6380/0") == "rediss://:***@cache:6380/0"
    assert mask_url("redis://cache:6379/0") == "redis://cache:6379/0"


def test_the_redactor_cleans_messages_arguments_and_tracebacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    previous = logging.getLogRecordFactory()
    Redactor(["pw-1234", "other-secret"]).install()
    try:
        log = logging.getLogger("scribe.test.redaction")
        with caplog.at_level(logging.INFO, logger="scribe.test.redaction"):
            log.info("connecting with %s to %s", "pw-1234", "postgresql://u:other-secret@h/db")
            try:
                raise RuntimeError("auth failed for password pw-1234")
            except RuntimeError:
                log.exception("write failed")
        text = caplog.text + "".join(r.exc_text or "" for r in caplog.records)
        assert "pw-1234" not in text and "other-secret" not in text
        assert "connecting with *** to postgresql://u:***@h/db" in caplog.text
        assert "auth failed for password ***" in text
    finally:
        logging.setLogRecordFactory(previous)


def test_security_defaults_are_plaintext_and_passwordless() -> None:
    security = Security.from_env({})
    assert security.secrets() == []
