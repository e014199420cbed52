"""The client side of the control socket: one request, one JSON reply.

What `evsed status`, `evsed sim` and the service processes use to reach the daemon.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

from evsed import dirs


def socket_path(runtime_dir: Path) -> Path:
    return runtime_dir / "control.sock"


class ControlError(Exception):
    pass


def request(runtime_dir: Path, req: dict, timeout_s: float = 3.0) -> dict:
    """Send one request to the running daemon and return its reply."""
    path = socket_path(runtime_dir)
    try:  # a socket in a directory another user owns may be theirs: never ask it, never obey it
        dirs.check_runtime_dir(runtime_dir)
    except dirs.DirectoryError as exc:
        raise ControlError(f"refusing the control socket: {exc}") from None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect(str(path))
            sock.sendall(json.dumps(req).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except FileNotFoundError:
        raise ControlError(f"no evsed daemon is running (no socket at {path})") from None
    except ConnectionRefusedError:
        raise ControlError(f"no evsed daemon answers on {path}") from None
    except PermissionError:
        raise ControlError(f"permission denied on {path}: join the daemon's group") from None
    except (OSError, TimeoutError) as exc:
        raise ControlError(f"control socket {path}: {exc}") from None
    try:
        return json.loads(data)
    except ValueError:
        raise ControlError(f"garbled reply from {path}") from None
