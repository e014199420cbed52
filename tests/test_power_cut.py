"""The power-cut campaign's bounded form (bench/campaign.py; `make campaign` runs 1000 kills):
the daemon killed with SIGKILL at random points of simulated sessions loses no finished session
and no outbox event, closes the interrupted session as power_loss, starts with the contactor
open, and leaves a database that passes integrity_check."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "bench"))

import campaign  # noqa: E402


def test_kill_9_at_random_points_loses_nothing(tmp_path):
    counts = campaign.Campaign(tmp_path, seed=20250101).run(kills=8)
    assert counts["kills"] == 8
    assert counts["sessions_total"] >= 1 and counts["events_checked"] > 0
    assert counts["closed_as_power_loss_checked"] == counts["closed_as_power_loss"]
