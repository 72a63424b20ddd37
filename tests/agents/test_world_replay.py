from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.world.apply import Applied, apply_event
from agents.world.model import WorldState, canonical_json, state_from_json, state_hash
from agents.world.replay import LoggedInput, ReplayError, first_difference, rebuild
from agents.world.step import step
from schemas import decode, encode
from schemas.events import WorldEvent
from tests.agents.world_fixtures import village, world_event

W = "w-replay"
NPCS = [f"npc-{n}" for n in range(1, 9)] + ["ghost"]
PLACES = ["square", "tavern", "market", "farm", "mine", "atlantis"]

inputs = st.lists(
    st.one_of(
        st.just(("tick",)),
        st.tuples(st.just("move"), st.sampled_from(NPCS), st.sampled_from(PLACES)),
        st.tuples(st.just("memory"), st.sampled_from(NPCS)),
        st.tuples(
            st.just("bond"), st.sampled_from(NPCS), st.sampled_from(NPCS), st.integers(-100, 100)
        ),
        st.tuples(st.just("join"), st.sampled_from(NPCS)),
        st.tuples(
            st.just("nowhere"),
        ),
        st.tuples(st.just("repeat"), st.integers(0, 50)),
        st.tuples(
            st.just("restart"),
        ),
    ),
    max_size=60,
)


def _event(spec: tuple[object, ...], number: int) -> WorldEvent | None:
    kind = spec[0]
    if kind == "move":
        return world_event(W, "npc_moved", f"e{number}", npc_id=spec[1], location_id=spec[2])
    if kind == "memory":
        return world_event(W, "memory_recorded", f"e{number}", npc_id=spec[1], content="x")
    if kind == "bond":
        return world_event(
            W,
            "relationship_changed",
            f"e{number}",
            npc_id=spec[1],
            other_npc_id=spec[2],
            delta=spec[3],
        )
    if kind == "join":
        return world_event(W, "faction_changed", f"e{number}", faction_id="guild", join=[spec[1]])
    if kind == "nowhere":  # refused by the world: the location does not exist
        return world_event(W, "npc_moved", f"e{number}", npc_id="npc-1", location_id="atlantis")
    return None


@settings(max_examples=40, deadline=None)
@given(inputs)
def test_replaying_the_log_reproduces_the_live_state(script: list[tuple[object, ...]]) -> None:
    """Live: events (some invalid, some repeated), ticks, and restarts from a snapshot's JSON.
    The log keeps what applied, round-tripped through JSON as the database would; replaying it
    from an empty world gives the live hash."""
    live = village(W)
    log = [
        LoggedInput(
            1,
            0,
            world_event(
                W,
                "world_loaded",
                f"load-{W}",
                template="village",
                image_base_url=f"https://cdn.scribe.invalid/worlds/{W}",
            ),
        )
    ]
    sent: list[WorldEvent] = []
    for number, spec in enumerate(script):
        if spec[0] == "tick":
            live, _ = step(live, live.tick + 1)
            log.append(LoggedInput(live.version, live.tick))
            continue
        if spec[0] == "restart":
            live = state_from_json(canonical_json(live))
            continue
        event = _event(spec, number)
        if event is None:  # repeat an earlier event
            if not sent:
                continue
            event = sent[int(str(spec[1])) % len(sent)]
        sent.append(event)
        outcome = apply_event(live, event)
        if isinstance(outcome, Applied):
            live = outcome.state
            stored = decode(encode(event), WorldEvent)
            log.append(LoggedInput(live.version, live.tick, stored))
    replayed = rebuild(W, log)
    assert state_hash(replayed) == state_hash(live)


def test_rebuild_refuses_a_gap_in_the_log() -> None:
    with pytest.raises(ReplayError, match="jumps from seq 0 to 2"):
        rebuild(W, [LoggedInput(2, 1)])


def test_rebuild_refuses_a_stored_event_that_no_longer_applies() -> None:
    bad = world_event(W, "npc_moved", npc_id="ghost", location_id="nowhere")
    with pytest.raises(ReplayError, match="does not apply on replay"):
        rebuild(W, [LoggedInput(1, 0, bad)])


def test_rebuild_refuses_a_tick_out_of_order() -> None:
    with pytest.raises(ReplayError, match="is tick 5"):
        rebuild(W, [LoggedInput(1, 5)])


def test_first_difference_names_the_first_differing_field() -> None:
    a = WorldState(W).to_dict()
    assert first_difference(a, a) is None
    b = WorldState(W).to_dict() | {"tick": 4}
    assert first_difference(a, b) == "tick: 0 != 4"
    c = {"npcs": {"n": {"hunger": 3}}}
    d = {"npcs": {"n": {"hunger": 5}}}
    assert first_difference(c, d) == "npcs.n.hunger: 3 != 5"
    assert first_difference({"x": [1, 2]}, {"x": [1]}) == "x: 2 items != 1 items"
    assert first_difference({"x": 1}, {}) == "x: 1 != missing"
    assert first_difference({"x": True}, {"x": 1}) == "x: True != 1"
