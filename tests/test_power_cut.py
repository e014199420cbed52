"""The power-cut campaign's bounded form (bench/campaign.py; `make campaign` runs 1000 kills):
the daemon and its OCPP uplink killed together with SIGKILL at random points of simulated
sessions lose no finished session, no outbox event and no queued OCPP message, queue none twice,
close the interrupted session as power_loss, start with the board's relay open, and leave
databases that pass integrity_check."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "bench"))

import campaign  # noqa: E402


# CI kills 80 times (about a minute, so that the whole suite stays well under CI's 10 minutes; make bench
# kills 200 times, make campaign 1000); a developer's `make test` 8 times, like hypothesis' profiles.
KILLS = 80 if os.environ.get("CI", "").lower() == "true" else 8
# The seed fixes the rounds' plan (each round draws the same numbers whatever the timing); this
# one's first 8 kills charge, finish, start up, and run the uplink with the CSMS offline and online,
# so the relay and OCPP checks meet something to check in the short form too.
SEED = 20250177


def test_kill_9_at_random_points_loses_nothing(tmp_path):
    counts = campaign.Campaign(tmp_path, seed=SEED).run(kills=KILLS)
    assert counts["kills"] == KILLS
    assert counts["sessions_total"] >= 1 and counts["events_checked"] > 0
    assert counts["closed_as_power_loss_checked"] == counts["closed_as_power_loss"]
    assert counts["relay_closed_at_kill"] >= 1 and counts["relay_open_at_ready_after_closed"] >= 1
    assert counts["ocpp_rounds"] >= 1
    # sessions begun before the uplink first followed the charger were never the CSMS's
    owed = counts["sessions_total"] - counts["sessions_before_first_contact"]
    assert owed >= 1 and counts["ocpp_sessions_checked"] == owed
    assert counts["ocpp_transaction_messages_checked"] == 2 * owed
