"""A small OCPP 1.6J central system (CSMS) on the `ocpp` package's central-system side: for demos
(`python -m simulator.csms` prints every message) and as the loopback peer of the uplink's tests."""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import itertools
import json
from http import HTTPStatus
from typing import Callable

import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call_result
from ocpp.v16.enums import Action
from websockets.typing import Subprotocol


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Station(ChargePoint):
    """One connected charge point, seen from the central system."""

    def __init__(self, id, connection, csms: CentralSystem):
        super().__init__(id, connection, response_timeout=csms.response_timeout)
        self.csms = csms

    async def route_message(self, raw_msg):
        try:
            frame = json.loads(raw_msg)
        except ValueError:
            frame = None
        if isinstance(frame, list) and frame and frame[0] == 2 and len(frame) == 4:
            await self.csms.record(self.id, frame[2], frame[3], frame[1])
        await super().route_message(raw_msg)

    @on(Action.boot_notification)
    def on_boot(self, **_):
        status, interval = self.csms.boot_answer()
        return call_result.BootNotification(current_time=now_iso(), interval=interval, status=status)

    @on(Action.heartbeat)
    def on_heartbeat(self, **_):
        return call_result.Heartbeat(current_time=now_iso())

    @on(Action.status_notification)
    def on_status(self, **_):
        return call_result.StatusNotification()

    @on(Action.authorize)
    def on_authorize(self, id_tag, **_):
        return call_result.Authorize(id_tag_info=self.csms.id_tag_info(id_tag))

    @on(Action.start_transaction)
    def on_start(self, id_tag, connector_id, meter_start, timestamp, **_):
        transaction_id = next(self.csms.transaction_ids)
        self.csms.transactions[transaction_id] = {"connectorId": connector_id, "idTag": id_tag,
                                                  "meterStart": meter_start, "timestamp": timestamp}
        return call_result.StartTransaction(transaction_id=transaction_id, id_tag_info=self.csms.id_tag_info(id_tag))

    @on(Action.stop_transaction)
    def on_stop(self, **_):
        return call_result.StopTransaction()

    @on(Action.meter_values)
    def on_meter_values(self, **_):
        return call_result.MeterValues()

    @on(Action.diagnostics_status_notification)
    def on_diagnostics_status(self, **_):
        return call_result.DiagnosticsStatusNotification()

    @on(Action.firmware_status_notification)
    def on_firmware_status(self, **_):
        return call_result.FirmwareStatusNotification()

    @on(Action.data_transfer)
    def on_data_transfer(self, **_):
        return call_result.DataTransfer(status="UnknownVendorId")

    @on(Action.sign_certificate)
    def on_sign_certificate(self, **_):  # the security whitepaper's; CertificateSigned is the test's to send
        return call_result.SignCertificate(status="Accepted")


class CentralSystem:
    """Records every CALL it receives as (identity, action, payload, unique_id), in order."""

    def __init__(self, *, boot: list[tuple[str, int]] | None = None, id_tags: dict | None = None,
                 password: str | None = None, response_timeout: float = 10,
                 echo: Callable[[str], None] | None = None):
        self.boots = list(boot or [])               # (status, interval) answers, then Accepted/300
        self.tags = id_tags if id_tags is not None else {}   # id_tag -> status (default Accepted)
        self.password = password
        self.response_timeout = response_timeout
        self.echo = echo
        self.messages: list[tuple[str, str, dict, str]] = []
        self.stations: dict[str, Station] = {}
        self.transaction_ids = itertools.count(1001)
        self.transactions: dict[int, dict] = {}     # transaction id given -> the StartTransaction it answered
        self.connections = 0
        self.changed = asyncio.Condition()
        self.server: websockets.Server | None = None

    def boot_answer(self) -> tuple[str, int]:
        return self.boots.pop(0) if self.boots else ("Accepted", 300)

    def id_tag_info(self, id_tag: str) -> dict:
        entry = self.tags.get(id_tag, "Accepted")
        return {"status": entry} if isinstance(entry, str) else dict(entry)

    async def record(self, identity: str, action: str, payload: dict, unique_id: str) -> None:
        self.messages.append((identity, action, payload, unique_id))
        if self.echo:
            self.echo(f"{identity} -> {action} {json.dumps(payload)}")
        async with self.changed:
            self.changed.notify_all()

    def actions(self, *names: str) -> list[tuple[str, dict]]:
        return [(a, p) for _, a, p, _ in self.messages if not names or a in names]

    async def wait_for(self, predicate: Callable[[], object], timeout: float = 10):
        """Until predicate() holds (re-checked after every message and connection change)."""
        async with self.changed:
            return await asyncio.wait_for(self.changed.wait_for(predicate), timeout)

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    def _check_auth(self, connection, request):
        if self.password is None:
            return None
        expected = "Basic " + base64.b64encode(
            f"{request.path.rsplit('/', 1)[-1]}:{self.password}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return connection.respond(HTTPStatus.UNAUTHORIZED, "unauthorized\n")
        return None

    async def _handler(self, ws) -> None:
        if ws.subprotocol != "ocpp1.6":
            await ws.close(1002, "ocpp1.6 only")
            return
        identity = ws.request.path.rstrip("/").rsplit("/", 1)[-1]
        station = Station(identity, ws, self)
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

    async def start(self, host: str = "127.0.0.1", port: int = 0, ssl=None) -> int:
        self.server = await websockets.serve(self._handler, host, port, subprotocols=[Subprotocol("ocpp1.6")],
                                             process_request=self._check_auth, ssl=ssl)
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def drop(self) -> None:
        """Close every open connection (the charge points see the CSMS go away)."""
        for station in list(self.stations.values()):
            await station._connection.close()

    async def call(self, identity: str, payload, timeout: float = 10):
        """A CALL from the central system to a connected charge point; its CALLRESULT."""
        await self.wait_for(lambda: identity in self.stations, timeout)
        return await self.stations[identity].call(payload, suppress=False)


async def _main(host: str, port: int) -> None:
    csms = CentralSystem(echo=lambda line: print(f"{now_iso()} {line}", flush=True))
    bound = await csms.start(host, port)
    print(f"CSMS listening on ws://{host}:{bound}/  (charge points connect to ws://{host}:{bound}/IDENTITY)",
          flush=True)
    await asyncio.Future()


def main() -> None:
    parser = argparse.ArgumentParser(description="a demo OCPP 1.6J central system that prints every message")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    try:
        asyncio.run(_main(args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
