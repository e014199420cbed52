"""The power-cut campaign's bounded form (bench/campaign.py; `make campaign` runs 1000 kills):
the daemon killed with SIGKILL at random points of simulated sessions loses no finished session
and no outbox event, closes the interrupted session as power_loss, starts with the contactor
open, and leaves a database that passes integrity_check."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "bench"))

import campaign  # noqa: E402


# CI kills 200 times (about 3 minutes); a developer's `make test` 8 times, like hypothesis' profiles.
KILLS = 200 if os.environ.get("CI", "").lower() == "true" else 8


def test_kill_9_at_random_points_loses_nothing(tmp_path):
    counts = campaign.Campaign(tmp_path, seed=20250101).run(kills=KILLS)
    assert counts["kills"] == KILLS
    assert counts["sessions_total"] >= 1 and counts["events_checked"] > 0
    assert counts["closed_as_power_loss_checked"] == counts["closed_as_power_loss"]
