"""Load management through the real Charger on the scenario runner's virtual clock: for any
profile of house-load steps, the site stays under its breaker but for the reaction time, and an
EV is never offered under 6 A (it pauses instead). Hypothesis draws the profiles."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evsed.shell import scenario

BREAKER_A, HEADROOM_A, TOL_A = 25.0, 1.0, 0.05
PHASE_LOAD = st.floats(0.0, BREAKER_A - HEADROOM_A, allow_nan=False).map(lambda a: round(a, 1))


class Watched(scenario.Runner):
    """The runner, recording the grid current and the pilot output at every poll (the daemon's
    pilot period): the resolution of the checks below."""

    def __init__(self, path: Path, data: dict):
        super().__init__(path, data)
        self.seen: list[tuple[float, float, str, float | None]] = []  # (t, grid max A, pilot mode, duty)

    def _poll(self) -> None:
        super()._poll()
        bench = self.world.connectors[1]
        self.seen.append((self.now, max(self.world.site.grid_a()), bench.pilot_mode, bench.pwm_duty()))


def scenario_data(loads: list[tuple[float, tuple[float, float, float]]], ev_phases: int) -> dict:
    steps: list[dict] = [{"t": 0.5, "do": "ev", "phases": ev_phases, "max_current_a": 32},
                         {"t": 1, "do": "plug"}, {"t": 2, "do": "tap", "card": "04A1B2C3"}]
    t = 2.0
    for dt_s, (l1, l2, l3) in loads:
        t += dt_s
        steps.append({"t": t, "do": "site", "l1_a": l1, "l2_a": l2, "l3_a": l3})
    steps.append({"t": t + 30, "do": "unplug"})
    return {"config": {"site": {"breaker_a": BREAKER_A, "headroom_a": HEADROOM_A, "min_pause_s": 60,
                                "raise_interval_s": 10, "meter": {"backend": "sim"}},
                       "timing": {"pilot_poll_s": 0.1, "pilot_lost_s": 0.25}},
            "step": steps}


def overloads(seen: list[tuple[float, float, str, float | None]]) -> list[tuple[float, float]]:
    """(start, end) of every span over the breaker, at the poll resolution."""
    spans, start = [], None
    for t, grid, _, _ in seen:
        if grid > BREAKER_A + TOL_A and start is None:
            start = t
        elif grid <= BREAKER_A + TOL_A and start is not None:
            spans.append((start, t))
            start = None
    if start is not None:
        spans.append((start, seen[-1][0]))
    return spans


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(loads=st.lists(st.tuples(st.floats(1.0, 90.0).map(lambda s: round(s, 1)),
                                st.tuples(PHASE_LOAD, PHASE_LOAD, PHASE_LOAD)), min_size=1, max_size=6),
       ev_phases=st.sampled_from([1, 3]))
def test_the_site_stays_under_its_breaker_but_for_the_reaction_time_and_no_offer_is_under_6_a(
        tmp_path_factory, loads, ev_phases):
    r = Watched(tmp_path_factory.mktemp("dlm") / "dlm.toml", scenario_data(loads, ev_phases))
    asyncio.run(r.run(verbose=False))
    timing = r.charger.config.timing
    # One meter period to see it, the grace an EV has to follow a lower PWM (or to leave C after
    # the PWM went off, for a pause), and one poll of resolution.
    allowed_s = timing.meter_interval_s + max(timing.current_change_grace_s, timing.stop_grace_s) \
        + timing.pilot_poll_s
    for start, end in overloads(r.seen):
        assert end - start <= allowed_s, f"over {BREAKER_A} A from t={start:g} to t={end:g}"
    for t, _, mode, duty in r.seen:
        if mode == "pwm":
            assert duty is not None and duty >= 10.0 - 1e-9, f"t={t:g}: duty {duty} % (under 6 A) without a pause"
    offers = [e.data["offered_a"] for _, _, e in r.events if e.type == "pilot.output" and e.data["mode"] == "pwm"]
    assert all(a >= 6.0 - 0.05 for a in offers)
    assert r.seen and offers  # the EV charged at some point: the checks saw something


CONNECTOR = {"id": 1, "cable_a": 32, "pilot": {"backend": "sim"}, "contactor": {"backend": "sim", "feedback": True},
             "meter": {"backend": "sim"}}


@pytest.mark.parametrize("declared_by", ["connector", "group"])
def test_declared_phases_let_a_one_phase_ev_start_beside_a_full_phase(tmp_path, declared_by):
    """L2 is full: with all three phases assumed the EV waits; declared as L1 only, it starts."""
    config: dict = {"site": {"breaker_a": 25, "headroom_a": 1, "meter": {"backend": "sim"}},
                    "connector": [dict(CONNECTOR, phases=[1]) if declared_by == "connector" else CONNECTOR]}
    if declared_by == "group":
        config["group"] = [{"name": "van", "phases": [1]}]
        config["card"] = [{"uid": "04A1B2C3", "group": "van"}]
    steps = [{"t": 0.5, "do": "site", "l1_a": 8, "l2_a": 21, "l3_a": 8},
             {"t": 0.6, "do": "ev", "phases": 1, "max_current_a": 32},
             {"t": 1, "do": "plug"}, {"t": 2, "do": "tap", "card": "04A1B2C3"},
             {"t": 2, "within": 3, "expect": {"contactor": "closed", "offered_a": 16}},
             {"t": 6, "until": 30, "expect": {"offered_a": 16, "grid_max_a": 25}}]
    r = scenario.Runner(tmp_path / "declared.toml", {"config": config, "step": steps})
    result = asyncio.run(r.run(verbose=False))
    assert result.failed == [] and len(result.passed) == 2
