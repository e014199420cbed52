"""[ocpp] version = "2.0.1": the adapter chosen, [ocpp.variables] checked as SetVariables checks
them with file:line:key errors, and a state file another version used loses its queue, not its place."""

from __future__ import annotations

from pathlib import Path

import pytest

from evsed.config import ConfigError, load, parse
from evsed.uplink import settings
from evsed.uplink.service import ADAPTERS
from evsed.uplink.state import State

ROOT = Path(__file__).resolve().parent.parent
BASE = (ROOT / "config" / "simulator.toml").read_text()


def ocpp(text: str, path: Path | str = "<config>"):
    return settings.parse(parse(BASE + '\n[ocpp]\nurl = "ws://h/"\nversion = "2.0.1"\n' + text, path))


def test_the_shipped_2_0_1_simulator_config_parses_and_chooses_the_v201_adapter():
    s = settings.parse(load(ROOT / "config" / "simulator-ocpp201.toml"))
    assert s.version == "2.0.1" and ADAPTERS[s.version] == "evsed.uplink.v201.uplink"
    assert s.keys["SampledDataCtrlr/TxUpdatedInterval"] == "10"
    assert s.keys["TxCtrlr/TxStartPoint"] == "PowerPathClosed"


def test_variables_are_read_by_component_with_instances_quoted():
    s = ocpp('[ocpp.variables]\nAuthCtrlr.LocalPreAuthorize = true\nOCPPCommCtrlr."MessageAttempts:TransactionEvent" = 5\n'
             'TxCtrlr.TxStopPoint = " EVConnected , Authorized"\n')
    assert dict(s.keys) == {"AuthCtrlr/LocalPreAuthorize": "true", "OCPPCommCtrlr/MessageAttempts:TransactionEvent": "5",
                            "TxCtrlr/TxStopPoint": "EVConnected,Authorized"}


@pytest.mark.parametrize("text, message", [
    ("TxCtrlr.TxStartPoint = \"ParkingBayOccupancy\"", "[ocpp.variables.TxCtrlr] TxStartPoint: not in the valuesList"),
    ("SecurityCtrlr.SecurityProfile = 3", "[ocpp.variables.SecurityCtrlr] SecurityProfile: not a writable variable"),
    ("CoffeeCtrlr.Strength = 3", "[ocpp.variables] CoffeeCtrlr: not a component with writable variables"),
    ("OCPPCommCtrlr.HeartbeatInterval = \"soon\"", "[ocpp.variables.OCPPCommCtrlr] HeartbeatInterval: expected"),
    ("SampledDataCtrlr.TxUpdatedInterval = -5", "TxUpdatedInterval: below 0"),
])
def test_a_bad_variable_names_file_line_and_key(text, message):
    with pytest.raises(ConfigError) as err:
        ocpp("[ocpp.variables]\n" + text + "\n", "evsed.toml")
    assert message in str(err.value) and str(err.value).startswith("evsed.toml:")


def test_the_1_6_key_table_is_not_read_under_2_0_1():
    with pytest.raises(ConfigError, match=r"\[ocpp\] keys: unknown key"):
        ocpp("[ocpp.keys]\nHeartbeatInterval = 60\n")


def test_a_state_file_of_another_version_keeps_its_place_but_drops_its_queue(tmp_path):
    state = State(tmp_path / "ocpp.sqlite")
    assert state.claim("1.6") == 0
    state.enqueue("StartTransaction", {"connectorId": 1}, session="s1", connector=1)
    state.set_meta("seq", 41)
    assert state.claim("1.6") == 0 and state.count("queue") == 1
    assert state.claim("2.0.1") == 1
    assert state.count("queue") == 0 and state.meta("seq") == "41" and state.meta("version") == "2.0.1"
    state.close()
