"""The cluster's SASL_SSL listener: a throw-away CA and broker certificate made with the JDK's
`keytool` when the cluster is created, and one SCRAM-SHA-512 user stored by
`kafka-storage format --add-scram`. Clients verify the brokers with the CA's PEM and log in as
that user; nothing here is ever committed or reused across clusters.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from devkit.stack.processes import StackError

MECHANISM = "SCRAM-SHA-512"
USERNAME = "scribe"
LISTENER = "SASL_SSL"
RECORD_FILE = "sasl_ssl.json"
VALIDITY = ("-validity", "30")  # days
# Every broker listens on loopback, so one certificate serves them all.
SUBJECT_ALT_NAMES = "SAN=IP:127.0.0.1,DNS:localhost"
KEYTOOL_TIMEOUT_S = 60
# Each keytool call is a short-lived JVM: skip the optimising compiler and use the simplest GC.
JVM_QUICK_START = ("-J-XX:TieredStopAtLevel=1", "-J-XX:+UseSerialGC")


@dataclass(frozen=True)
class SaslSslListener:
    """What the brokers and the clients of the SASL_SSL listener need."""

    username: str
    password: str
    cafile: str  # PEM, for Python clients (SCRIBE_KAFKA_SSL_CAFILE)
    keystore: str  # PKCS12: the broker's key and certificate chain
    truststore: str  # PKCS12: the CA
    store_password: str

    def save(self, root: Path) -> None:
        (root / RECORD_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def recorded(cls, root: Path) -> SaslSslListener | None:
        path = root / RECORD_FILE
        return cls(**json.loads(path.read_text())) if path.exists() else None

    def broker_properties(self) -> dict[str, str]:
        """The listener's part of every node's `server.properties`."""
        prefix = f"listener.name.{LISTENER.lower()}"
        return {
            f"{prefix}.sasl.enabled.mechanisms": MECHANISM,
            f"{prefix}.{MECHANISM.lower()}.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
            f"{prefix}.ssl.keystore.type": "PKCS12",
            f"{prefix}.ssl.keystore.location": self.keystore,
            f"{prefix}.ssl.keystore.password": self.store_password,
            f"{prefix}.ssl.key.password": self.store_password,
            f"{prefix}.ssl.truststore.type": "PKCS12",
            f"{prefix}.ssl.truststore.location": self.truststore,
            f"{prefix}.ssl.truststore.password": self.store_password,
        }

    def scram_format_arguments(self) -> list[str]:
        """`kafka-storage format` arguments that store the user's SCRAM credentials."""
        return ["--add-scram", f"{MECHANISM}=[name={self.username},password={self.password}]"]


def _keytool(*arguments: str) -> None:
    keytool = shutil.which("keytool")
    if keytool is None:
        raise StackError(
            "the SASL_SSL listener needs the JDK's `keytool` on PATH (it comes with Java 17+)"
        )
    result = subprocess.run(
        [keytool, *JVM_QUICK_START, *arguments],
        capture_output=True,
        text=True,
        timeout=KEYTOOL_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(
            f"keytool {arguments[0]} failed ({result.returncode}): "
            f"{(result.stdout + result.stderr).strip()}"
        )


def create(directory: Path) -> SaslSslListener:
    """A new CA, a broker certificate it signed (for 127.0.0.1), the stores the brokers read,
    the CA's PEM, and a random SCRAM password, all under `directory`. Steps that do not depend
    on each other run side by side: each keytool call is a JVM start."""
    directory.mkdir(parents=True, exist_ok=True)
    store_password = secrets.token_hex(16)
    ca_store, ca_pem = directory / "ca.p12", directory / "ca.pem"
    keystore, truststore = directory / "broker.p12", directory / "truststore.p12"
    request, signed = directory / "broker.csr", directory / "broker-chain.pem"
    store = ("-storetype", "PKCS12", "-storepass", store_password, "-keypass", store_password)
    new_key = ("-genkeypair", "-keyalg", "EC", "-groupname", "secp256r1", *VALIDITY)

    def new_ca() -> None:
        _keytool(
            *new_key,
            *("-alias", "ca", "-dname", "CN=Scribe test CA", "-keystore", str(ca_store), *store),
            *("-ext", "bc:c=ca:true", "-ext", "KU:c=keyCertSign,cRLSign"),
        )
        _keytool(
            *("-exportcert", "-rfc", "-alias", "ca", "-file", str(ca_pem)),
            *("-keystore", str(ca_store), "-storepass", store_password),
        )

    def new_broker_key() -> None:
        _keytool(
            *new_key,
            *("-alias", "broker", "-dname", "CN=127.0.0.1", "-keystore", str(keystore), *store),
            *("-ext", SUBJECT_ALT_NAMES),
        )
        _keytool(
            *("-certreq", "-alias", "broker", "-file", str(request)),
            *("-keystore", str(keystore), "-storepass", store_password),
        )

    def import_certificate(target: Path, alias: str, certificate: Path) -> None:
        _keytool(
            *("-importcert", "-noprompt", "-alias", alias, "-file", str(certificate)),
            *("-keystore", str(target), *store),
        )

    with ThreadPoolExecutor(2) as pool:
        for step in [pool.submit(new_ca), pool.submit(new_broker_key)]:
            step.result()
        _keytool(
            *("-gencert", "-rfc", "-alias", "ca", "-infile", str(request)),
            *("-outfile", str(signed), *VALIDITY),
            *("-keystore", str(ca_store), "-storepass", store_password),
            *("-ext", SUBJECT_ALT_NAMES, "-ext", "KU:c=digitalSignature"),
            *("-ext", "EKU=serverAuth"),
        )
        # The certificate reply with its CA after it: the whole chain in one import.
        signed.write_text(signed.read_text() + ca_pem.read_text())
        imports = [
            pool.submit(import_certificate, keystore, "broker", signed),
            pool.submit(import_certificate, truststore, "ca", ca_pem),
        ]
        for step in imports:
            step.result()
    ca_store.unlink()  # the CA's key signs nothing else
    request.unlink()
    return SaslSslListener(
        username=USERNAME,
        password=secrets.token_hex(16),
        cafile=str(ca_pem),
        keystore=str(keystore),
        truststore=str(truststore),
        store_password=store_password,
    )
