"""Provider faults injected while the router runs, one at a time, through the provider
simulator's rules: the first provider timing out, a 429 storm over every key of a provider,
malformed 200 answers for a share of calls. Afterwards every AI request has exactly one answer
(served, or failed with a clear reason), each served one exactly one usage event and ledger row,
failed ones none; the bad input is in the DLQ; the worker is alive and no agent crashed."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from devkit.harness import WorkerProcess
from schemas.events import ResponseStatus
from tests.faults.ai_workload import AiLoad, ProviderSimulator
from tests.faults.conftest import FaultStack
from tests.faults.observe import flow_failures, log_size

pytestmark = pytest.mark.faults

LANES = ("held", "urgent", "normal", "deferred")
PER_PHASE = 40
ROUNDS_DURING = 3
INVALID_PER_PHASE = 3
TIMEOUT_HOLD_S = 2.0  # the simulator holds a timed-out call this long; the router waits 1 s


@dataclass(frozen=True)
class ProviderFault:
    name: str
    rules: tuple[dict[str, Any], ...]
    seconds: float
    signs: tuple[str, ...]  # what an answer's error or rationale says when it met the fault


FAULTS = (
    ProviderFault(
        "provider-timeouts-gemini-10s",
        ({"action": "timeout", "provider": "gemini"},),
        10.0,
        ("did not answer within", "circuit open"),
    ),
    ProviderFault(
        "provider-429-storm-all-gemini-keys-15s",
        ({"action": "429", "provider": "gemini", "retry_after_s": 1.0},),
        15.0,
        ("rate limited the key",),
    ),
    ProviderFault(
        "provider-malformed-every-3rd-call-10s",
        ({"action": "malformed", "every": 3},),
        10.0,
        ("without a JSON object", "answer has no", "answer's", "without text"),
    ),
)


def _log_since(worker: WorkerProcess, offset: int) -> str:
    with open(worker.log_path, "rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


def _wait_for_lanes(worker: WorkerProcess, timeout: float = 60) -> None:
    """Each router lane's consumer (of this start of the worker) has its partitions."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = _log_since(worker, worker.log_offset)
        assigned = [f"router-{lane}: assigned partitions" for lane in LANES]
        # The intake runs on the flow runtime, which logs its assignment as every flow does.
        if all(line in text for line in [*assigned, "router-decide: assigned partitions"]):
            return
        time.sleep(0.2)
    raise TimeoutError(f"router lanes not assigned:\n{worker.log_tail()}")


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
async def test_provider_fault_loses_and_doubles_nothing(
    fault_stack: FaultStack, fault_worker: WorkerProcess, fault: ProviderFault
) -> None:
    env = fault_stack.env()
    simulator = ProviderSimulator(env["SCRIBE_PROVIDER_URL"])
    simulator.rules()
    simulator.configure(timeout_hold_s=TIMEOUT_HOLD_S)
    await asyncio.to_thread(_wait_for_lanes, fault_worker)
    load = AiLoad(fault.name, env["SCRIBE_KAFKA_URL"])
    log_start = log_size(fault_worker)

    await load.publish(load.batch(PER_PHASE, invalid=INVALID_PER_PHASE))
    print(f"{fault.name}: {PER_PHASE} requests published before the fault")
    started = time.monotonic()
    try:
        simulator.rules(*fault.rules)
        print(f"{fault.name}: fault injected")
        for number in range(1, ROUNDS_DURING + 1):
            await load.publish(load.batch(PER_PHASE, invalid=INVALID_PER_PHASE))
            print(f"  round {number}/{ROUNDS_DURING} published during the fault")
            await asyncio.sleep(fault.seconds * 0.8 / ROUNDS_DURING)
        await asyncio.sleep(max(0.0, fault.seconds - (time.monotonic() - started)))
    finally:
        simulator.rules()
    print(f"{fault.name}: recovered after {time.monotonic() - started:.1f} s")
    await load.publish(load.batch(PER_PHASE, invalid=INVALID_PER_PHASE))
    print(f"{fault.name}: {PER_PHASE} requests published after the fault")

    db = await asyncpg.connect(env["SCRIBE_DATABASE_URL"])
    try:
        outcome, answers = await load.verify(db)
    finally:
        await db.close()
    failed = [a for a in answers if a.status is not ResponseStatus.OK]
    met_fault = [a for a in answers if any(s in f"{a.error} {a.rationale}" for s in fault.signs)]
    calls = simulator.statuses(load.marker)
    print(
        f"{fault.name}: {len(answers) - len(failed)} served, {len(failed)} failed, "
        f"{len(met_fault)} answers name the fault; provider calls by status {dict(calls)}"
    )
    print(outcome.line())
    assert outcome.lost == 0, fault_worker.log_tail()
    assert outcome.duplicated == 0
    assert outcome.valid_dead_lettered == 0
    assert met_fault, "no answer met the fault: it was not injected"
    for answer in failed:
        assert answer.status is ResponseStatus.FAILED, answer
        assert (answer.error or "").startswith("no model could serve the request: "), answer
    assert fault_worker.alive(), fault_worker.log_tail()
    assert flow_failures(fault_worker, log_start) == []
    assert "router: executing" not in _log_since(fault_worker, log_start), "executor failed"
