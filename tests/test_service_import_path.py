"""The services `evsed run` starts import the installed evsed, whatever folder it runs from: a
checkout's `evsed/` in the working directory (`cd ~ && evsed/.venv/bin/evsed run`) is never
imported in its place."""

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from test_daemon import write_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_services_started_from_a_folder_holding_an_evsed_directory_import_the_installed_package(tmp_path):
    home = tmp_path / "home"
    (home / "evsed" / "config").mkdir(parents=True)  # a checkout's folder, not what is installed
    (home / "evsed" / "__init__.py").write_text("")
    (home / "evsed" / "config" / "__init__.py").write_text("")  # no load(): the AttributeError of issue 26
    path = write_config(tmp_path, f'[web]\nport = {free_port()}\n')
    evsed = Path(sys.executable).with_name("evsed")  # the console script, as `.venv/bin/evsed run`
    proc = subprocess.Popen([str(evsed), "run", "-c", str(path)], cwd=home, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    events: queue.Queue = queue.Queue()

    def read() -> None:
        for line in proc.stderr:  # type: ignore[union-attr]
            try:
                events.put(json.loads(line))
            except ValueError:  # a traceback: the service's
                events.put({"event": "not-json", "line": line})
        events.put(None)
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        seen = []
        while (event := events.get(timeout=20)) is not None:
            seen.append(event)
            if event["event"] in ("service.running", "service.exited"):
                break
        assert seen[-1]["event"] == "service.running", [e.get("line") or e["event"] for e in seen]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        reader.join(10)
