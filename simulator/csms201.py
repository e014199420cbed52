"""A small OCPP 2.0.1 central system on the `ocpp` package's v201 central-system side, beside the 1.6
one in csms.py: for demos (`python -m simulator.csms201` prints every message) and as the loopback
peer of the 2.0.1 uplink's tests. It checks what it is sent, not only its schema: every
transaction's seqNo runs 0, 1, 2... once each, Started first and Ended last (csms.problems)."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import websockets
from ocpp.messages import MessageType, get_validator
from ocpp.routing import on
from ocpp.v201 import ChargePoint, call_result
from ocpp.v201.enums import Action
from websockets.typing import Subprotocol

from simulator.csms import CentralSystem, now_iso


class Station201(ChargePoint):
    """One connected charging station, seen from the central system."""

    def __init__(self, id: str, connection: Any, csms: CentralSystem201):
        super().__init__(id, connection, response_timeout=csms.response_timeout)
        self.csms = csms

    async def route_message(self, raw_msg: str) -> None:
        try:
            frame = json.loads(raw_msg)
        except ValueError:
            frame = None
        if isinstance(frame, list) and frame and frame[0] == 2 and len(frame) == 4:
            self.csms.check(frame[2], frame[3])
            await self.csms.record(self.id, frame[2], frame[3], frame[1])
        await super().route_message(raw_msg)

    @on(Action.boot_notification)
    def on_boot(self, **_: Any) -> Any:
        status, interval = self.csms.boot_answer()
        return call_result.BootNotification(current_time=now_iso(), interval=interval, status=status)

    @on(Action.heartbeat)
    def on_heartbeat(self, **_: Any) -> Any:
        return call_result.Heartbeat(current_time=now_iso())

    @on(Action.status_notification)
    def on_status(self, **_: Any) -> Any:
        return call_result.StatusNotification()

    @on(Action.authorize)
    def on_authorize(self, id_token: dict, **_: Any) -> Any:
        return call_result.Authorize(id_token_info=self.csms.id_tag_info(id_token["id_token"]))

    @on(Action.transaction_event)
    def on_transaction_event(self, id_token: dict | None = None, **_: Any) -> Any:
        if id_token is None:
            return call_result.TransactionEvent()
        return call_result.TransactionEvent(id_token_info=self.csms.id_tag_info(id_token["id_token"]))

    @on(Action.meter_values)
    def on_meter_values(self, **_: Any) -> Any:
        return call_result.MeterValues()

    @on(Action.notify_report)
    def on_notify_report(self, **_: Any) -> Any:
        return call_result.NotifyReport()

    @on(Action.notify_event)
    def on_notify_event(self, **_: Any) -> Any:
        return call_result.NotifyEvent()

    @on(Action.security_event_notification)
    def on_security_event(self, **_: Any) -> Any:
        return call_result.SecurityEventNotification()

    @on(Action.firmware_status_notification)
    def on_firmware_status(self, **_: Any) -> Any:
        return call_result.FirmwareStatusNotification()

    @on(Action.log_status_notification)
    def on_log_status(self, **_: Any) -> Any:
        return call_result.LogStatusNotification()

    @on(Action.report_charging_profiles)
    def on_report_charging_profiles(self, **_: Any) -> Any:
        return call_result.ReportChargingProfiles()

    @on(Action.notify_charging_limit)
    def on_notify_charging_limit(self, **_: Any) -> Any:
        return call_result.NotifyChargingLimit()

    @on(Action.reservation_status_update)
    def on_reservation_status(self, **_: Any) -> Any:
        return call_result.ReservationStatusUpdate()

    @on(Action.sign_certificate)
    def on_sign_certificate(self, **_: Any) -> Any:
        return call_result.SignCertificate(status="Accepted")

    @on(Action.data_transfer)
    def on_data_transfer(self, **_: Any) -> Any:
        return call_result.DataTransfer(status="UnknownVendorId")


class CentralSystem201(CentralSystem):
    """The 1.6 demo CSMS's recording and waiting, on ocpp2.0.1; problems lists what a strict CSMS
    would hold against the station, tx_events each transaction's events in order."""

    subprotocol = "ocpp2.0.1"

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.problems: list[str] = []
        self.tx_events: dict[str, list[dict]] = {}  # transactionId -> its TransactionEvents

    def id_tag_info(self, id_tag: str) -> dict:
        entry = self.tags.get(id_tag, "Accepted")
        return {"status": entry} if isinstance(entry, str) else dict(entry)

    def check(self, action: str, payload: dict) -> None:
        """Hold the station to the schema and to how transactions run."""
        try:
            errors = list(get_validator(MessageType.Call, action, "2.0.1").iter_errors(payload))
        except (OSError, ValueError):
            self.problems.append(f"unknown action {action}")
            return
        if errors:
            self.problems.append(f"{action}: {errors[0].message}"[:300])
            return
        if action != "TransactionEvent":
            return
        tid = payload["transactionInfo"]["transactionId"]
        events = self.tx_events.setdefault(tid, [])
        kinds = [e["eventType"] for e in events]
        if payload["seqNo"] != len(events):
            self.problems.append(f"{tid}: seqNo {payload['seqNo']} after {len(events)} events")
        if (payload["eventType"] == "Started") != (not events) or "Ended" in kinds:
            self.problems.append(f"{tid}: {payload['eventType']} after {kinds}")
        events.append(payload)

    async def _handler(self, ws: Any) -> None:
        if ws.subprotocol != self.subprotocol:
            await ws.close(1002, f"{self.subprotocol} only")
            return
        identity = ws.request.path.rstrip("/").rsplit("/", 1)[-1]
        station = Station201(identity, ws, self)
        self.stations[identity] = station
        self.connections += 1
        await self._notify()
        try:
            await station.start()
        except websockets.exceptions.ConnectionClosed:
            pass
        finally:
            if self.stations.get(identity) is station:
                del self.stations[identity]
            await self._notify()

    async def start(self, host: str = "127.0.0.1", port: int = 0, ssl: Any = None) -> int:
        self.server = await websockets.serve(self._handler, host, port, subprotocols=[Subprotocol(self.subprotocol)],
                                             process_request=self._check_auth, ssl=ssl)
        return int(self.server.sockets[0].getsockname()[1])


async def _main(host: str, port: int) -> None:
    csms = CentralSystem201(echo=lambda line: print(f"{now_iso()} {line}", flush=True))
    bound = await csms.start(host, port)
    print(f"OCPP 2.0.1 CSMS listening on ws://{host}:{bound}/  (stations connect to ws://{host}:{bound}/IDENTITY)",
          flush=True)
    await asyncio.Future()


def main() -> None:
    parser = argparse.ArgumentParser(description="a demo OCPP 2.0.1 central system that prints every message")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    try:
        asyncio.run(_main(args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
