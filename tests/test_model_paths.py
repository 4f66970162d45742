"""Deterministic model-based paths generated from the transition table (as XState does).

For every edge of the table (internal ones included), the shortest path from the initial state
to the edge's source, then the edge taken by what causes it (a user trigger; an injected fault,
an expiry or another session sharing the token store for the internal edges), replayed against
a freshly reset sandbox and checked after every step: the state, the error, the edge recorded.
Likewise every refused (state, trigger) pair and both outcomes of every guard. Each run feeds the
model-coverage recorder that ``test_properties`` checks.
"""

from __future__ import annotations

import pytest

from session_fsm import State, table
from session_fsm.sandbox import Sandbox
from tests.model_coverage import (
    COVERAGE,
    Journey,
    edge_journey,
    guard_journeys,
    items,
    refused_journey,
    replay,
)


@pytest.mark.parametrize(
    "edge", table.TRANSITIONS, ids=[f"{e.source.value}-{e.trigger}" for e in table.TRANSITIONS]
)
def test_shortest_path_through_edge(edge: table.Edge, sb: Sandbox) -> None:
    journey = edge_journey(edge)
    replay(journey, sb)
    assert COVERAGE.count(("edge", edge.source.value, edge.trigger, edge.dest.value), "paths")


@pytest.mark.parametrize(
    ("state", "trigger"),
    table.refused_pairs(),
    ids=[f"{s.value}-{t}" for s, t in table.refused_pairs()],
)
def test_refused_pair_sends_nothing(state: State, trigger: str, sb: Sandbox) -> None:
    replay(refused_journey(state, trigger), sb)
    assert COVERAGE.count(("refused", state.value, trigger), "paths")


@pytest.mark.parametrize("journey", guard_journeys(), ids=lambda j: j.name)
def test_guard_outcome(journey: Journey, sb: Sandbox) -> None:
    replay(journey, sb)
    for step in journey.steps:  # a guard refusal is recorded as the guard that failed
        if step.error == "GuardFailed":
            assert COVERAGE.count(("guard", journey.name.split("-")[0], "False"), "paths")


def test_journeys_are_derived_from_the_table() -> None:
    """One journey per edge and per refused pair; every path starts at the initial state."""
    for e in table.TRANSITIONS:
        steps = edge_journey(e).steps
        prefix = table.shortest_path(table.INITIAL, [e.source]) or []
        assert [s.label for s in steps[:-1]] == [p.trigger for p in prefix]
        assert steps[-1].edge == e and steps[-1].state is e.dest
    assert len(items()) == len(table.TRANSITIONS) + len(table.refused_pairs()) + 2 * len(
        table.GUARDS
    )
