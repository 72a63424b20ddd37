"""The embedded local stack: `scribe stack up | down | status`.

`up` starts what is not already running and records each process in `<root>/stack.json`;
`down` stops exactly the processes recorded there. Test fixtures use the same class.
The broker is Tansu by default, or one Apache Kafka node (`broker="apache"`), or none when Kafka
runs elsewhere (`broker=None`: the engine tests use PostgreSQL and Redis from here).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from devkit.stack.processes import (
    ProcessRecord,
    StackError,
    free_port,
    port_is_free,
    sigterm_as_interrupt,
)
from devkit.stack.services import (
    ApacheKafkaBroker,
    CdnSimulator,
    Postgres,
    ProviderSimulator,
    Redis,
    Service,
    TansuBroker,
)

__all__ = ["BROKERS", "LocalStack", "ServiceStatus", "StackError", "fill_environment"]

STATE_FILE = "stack.json"
BROKERS = ("tansu", "apache")
# What suits the embedded broker only, set with its URL: consumer-group timeouts short enough
# for a single process, and producer batches lingering 5 ms (unbatched sends cost the router's
# decide a quarter of its rate there; on Kafka they cost nothing, and waiting adds latency).
TANSU_TUNING = {"SCRIBE_FAST_REBALANCE": "1", "SCRIBE_PRODUCER_LINGER_MS": "5"}


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    env_var: str
    url: str
    pid: int
    running: bool


@dataclass(frozen=True)
class _Entry:
    pid: int
    started_at: float
    port: int
    url: str

    @property
    def record(self) -> ProcessRecord:
        return ProcessRecord(self.pid, self.started_at)


class LocalStack:
    def __init__(
        self, root: Path, broker: str | None = "tansu", kafka_jars: Path | None = None
    ) -> None:
        """`kafka_jars`: where the Apache Kafka jars are cached (default `<root>/kafka`)."""
        self.root = root.resolve()
        self.broker = broker
        self.started: list[str] = []
        brokers: list[Service] = []
        if broker == "tansu":
            brokers = [TansuBroker(self.root)]
        elif broker == "apache":
            brokers = [ApacheKafkaBroker(self.root, kafka_jars)]
        elif broker is not None:
            raise StackError(f"unknown broker {broker!r}; choose one of {', '.join(BROKERS)}")
        self.services = [
            *brokers,
            Postgres(self.root),
            Redis(self.root),
            CdnSimulator(self.root),
            ProviderSimulator(self.root),
        ]

    @classmethod
    def at(cls, root: Path) -> LocalStack:
        """The stack recorded under `root`, with the broker it was started with (Tansu when
        nothing is recorded)."""
        recorded = cls(root)._load()
        return cls(root, broker="apache" if ApacheKafkaBroker.name in recorded else "tansu")

    @property
    def _state_path(self) -> Path:
        return self.root / STATE_FILE

    def _load(self) -> dict[str, _Entry]:
        if not self._state_path.exists():
            return {}
        raw = json.loads(self._state_path.read_text())
        return {name: _Entry(**entry) for name, entry in raw.items()}

    def _save(self, state: dict[str, _Entry]) -> None:
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({k: asdict(v) for k, v in state.items()}, indent=2))
        tmp.replace(self._state_path)

    def up(self, report: Callable[[str], None] = lambda _: None) -> dict[str, str]:
        """Start what is not running; return the environment (`SCRIBE_*_URL`) to reach it.

        `started` then names the services this call started (not those it found running).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        self.started = []
        state = self._load()
        ours = {s.name for s in self.services}
        other_broker = {TansuBroker.name, ApacheKafkaBroker.name} & set(state) - ours
        if other_broker:
            raise StackError(
                f"the stack in {self.root} runs another broker ({other_broker.pop()}); "
                "stop it first with `scribe stack down`"
            )
        for service in self.services:
            entry = state.get(service.name)
            if entry is not None and entry.record.alive() and service.ready(entry.port):
                report(f"{service.name}: already running (pid {entry.pid}) at {entry.url}")
                continue
            port = entry.port if entry is not None and port_is_free(entry.port) else free_port()
            started = time.monotonic()
            record = service.start(port)
            # Recorded before the readiness wait, so a failed start can still be stopped.
            state[service.name] = _Entry(record.pid, record.started_at, port, service.url(port))
            self._save(state)
            self.started.append(service.name)
            service.wait_ready(record, port)
            report(
                f"{service.name}: started (pid {record.pid}) at {service.url(port)} "
                f"in {time.monotonic() - started:.1f} s"
            )
        return self.environment()

    def environment(self) -> dict[str, str]:
        state = self._load()
        env = {s.env_var: state[s.name].url for s in self.services if s.name in state}
        for service in self.services:
            if service.name in state:
                env.update(service.extra_env)
        if self.broker == "tansu":
            env.update(TANSU_TUNING)
        return env

    def status(self) -> list[ServiceStatus]:
        state = self._load()
        result = []
        for service in self.services:
            entry = state.get(service.name)
            if entry is None:
                continue
            running = entry.record.alive() and service.ready(entry.port)
            result.append(
                ServiceStatus(service.name, service.env_var, entry.url, entry.pid, running)
            )
        return result

    def is_running(self) -> bool:
        statuses = self.status()
        return len(statuses) == len(self.services) and all(s.running for s in statuses)

    def down(
        self, report: Callable[[str], None] = lambda _: None, only: Iterable[str] | None = None
    ) -> None:
        """Stop exactly the processes `up` recorded (or those named in `only`), in reverse
        start order."""
        state = self._load()
        names = None if only is None else set(only)
        for service in reversed(self.services):
            if names is not None and service.name not in names:
                continue
            entry = state.pop(service.name, None)
            if entry is None:
                continue
            if entry.record.alive():
                service.stop(entry.record, entry.port)
                report(f"{service.name}: stopped (pid {entry.pid})")
            else:
                report(f"{service.name}: was not running")
            self._save(state)
        if self._state_path.exists() and not state:
            self._state_path.unlink()

    @contextmanager
    def stopped(self, name: str) -> Iterator[None]:
        """Stop one running service for the duration of the block, then start it again on the
        same port and record the new process (fault tests)."""
        service = next(s for s in self.services if s.name == name)
        entry = self._load()[name]
        service.stop(entry.record, entry.port)
        try:
            yield
        finally:
            record = service.start(entry.port)
            state = self._load()
            state[name] = _Entry(record.pid, record.started_at, entry.port, entry.url)
            self._save(state)
            service.wait_ready(record, entry.port)

    @contextmanager
    def running(self, report: Callable[[str], None] = lambda _: None) -> Iterator[dict[str, str]]:
        """Up for the duration of the block; afterwards, also on error, Ctrl-C or SIGTERM, stop
        what this block started (a stack that was already running is left running)."""
        with sigterm_as_interrupt():
            try:
                yield self.up(report)
            finally:
                self.down(report, only=self.started)


def fill_environment(environ: MutableMapping[str, str], state_dir: Path) -> list[str]:
    """Set in `environ` the SCRIBE_* variables it leaves unset (or empty) from the stack running
    under `state_dir`, if one runs; return the names set. What is already set wins. The
    embedded broker's tuning comes along only with its URL."""
    stack = LocalStack.at(state_dir)
    if not stack.is_running():
        return []
    filled = {name: url for name, url in stack.environment().items() if not environ.get(name)}
    if environ.get("SCRIBE_KAFKA_URL"):
        for name in TANSU_TUNING:
            filled.pop(name, None)
    environ.update(filled)
    return sorted(filled)
