"""The Apache Kafka broker's jars, fetched from Maven Central with Maven and cached.

`pom.xml` beside this file names the release. `mvn dependency:copy-dependencies` copies the
broker and its runtime dependencies into `<cache>/libs`; Maven's own downloads stay in
`<cache>/m2`, so a second fetch (or a new pom) costs no network for what is already there.
A stamp file records the pom's hash: a changed pom refetches, an unchanged one does nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from devkit.stack.processes import StackError

POM = Path(__file__).with_name("pom.xml")
MIN_JAVA = 17
FETCH_TIMEOUT_S = 900


@dataclass(frozen=True)
class KafkaJars:
    """A fetched Kafka release: `java -cp <classpath>` runs its main classes."""

    libs: Path
    version: str
    java: str

    @property
    def classpath(self) -> str:
        return str(self.libs / "*")


def kafka_version(pom_text: str) -> str:
    found = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom_text)
    if found is None:
        raise StackError(f"{POM}: no <kafka.version> property")
    return found.group(1).strip()


def java_major(version_output: str) -> int:
    """The major version from `java -version` output (`"17.0.15"`, `"1.8.0_392"`, `"21"`)."""
    found = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if found is None:
        raise StackError(f"cannot read the Java version from: {version_output.strip()!r}")
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major


def find_java() -> str:
    """`$JAVA_HOME/bin/java`, else `java` on PATH; Kafka 4 brokers need Java 17 or newer."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise StackError(
            f"Apache Kafka needs Java {MIN_JAVA}+ and none was found (set JAVA_HOME or put "
            "`java` on PATH; on Debian: apt-get install openjdk-17-jre-headless)"
        )
    result = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    major = java_major(result.stderr or result.stdout)
    if major < MIN_JAVA:
        raise StackError(f"Apache Kafka 4 brokers need Java {MIN_JAVA}+; {java} is Java {major}")
    return java


def fetch(cache: Path, report: Callable[[str], None] = lambda _: None) -> KafkaJars:
    """The jars for the release `pom.xml` names, fetched once into `cache`."""
    java = find_java()
    pom_text = POM.read_text()
    version = kafka_version(pom_text)
    libs = cache / "libs"
    stamp = libs / ".pom-sha256"
    digest = hashlib.sha256(pom_text.encode()).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == digest:
        return KafkaJars(libs, version, java)

    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(
            "fetching Apache Kafka needs Maven (`mvn`) on PATH; on Debian: apt-get install maven"
        )
    cache.mkdir(parents=True, exist_ok=True)
    staging = cache / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    report(f"fetching Apache Kafka {version} from Maven Central into {libs} (once) ...")
    started = time.monotonic()
    cmd = [
        mvn,
        "--batch-mode",
        "--quiet",
        "--file",
        str(POM),
        f"-Dmaven.repo.local={(cache / 'm2').resolve()}",
        "dependency:copy-dependencies",
        f"-DoutputDirectory={staging.resolve()}",
        "-DincludeScope=runtime",
    ]
    try:
        result = subprocess.run(
            cmd, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise StackError(
            f"mvn did not finish within {FETCH_TIMEOUT_S} s: {' '.join(cmd)}"
        ) from None
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        raise StackError(
            f"Maven could not fetch Apache Kafka {version} (exit {result.returncode}):\n"
            f"$ {' '.join(cmd)}\n{output}"
        )
    jars = sorted(staging.glob("*.jar"))
    if not any(j.name == f"kafka_2.13-{version}.jar" for j in jars):
        raise StackError(f"mvn succeeded but {staging} holds no kafka_2.13-{version}.jar")
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    stamp.write_text(digest + "\n")
    report(f"fetched {len(jars)} jars in {time.monotonic() - started:.0f} s")
    return KafkaJars(libs, version, java)
