"""The client side of the control socket: one command, its typed reply (evsed.protocol).

What `evsed status`, `evsed sim` and the updater use to reach the daemon. It imports only the
protocol's bases, so `evsed status` loads no more of the protocol than its own command and reply.
"""

from __future__ import annotations

import _socket  # socket.py's own core: socket.py adds enums that cost `evsed status` 2 ms to import
import os

from evsed import dirs
from evsed import protocol_types as p
from evsed import wire

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from pathlib import Path
    from typing import TypeVar

    R = TypeVar("R", bound=p.Reply)


def socket_path(runtime_dir: Path) -> Path:
    return runtime_dir / dirs.SOCKET_NAME


class ControlError(Exception):
    pass


def request(runtime_dir: os.PathLike[str] | str, command: p.Command[R], timeout_s: float = 3.0) -> R | p.Failure:
    """Send one command to the running daemon and return its reply (a Failure when it refused)."""
    path = os.path.join(runtime_dir, dirs.SOCKET_NAME)
    try:  # a socket in a directory another user owns may be theirs: never ask it, never obey it
        dirs.check_runtime_dir(runtime_dir)
    except dirs.DirectoryError as exc:
        raise ControlError(f"refusing the control socket: {exc}") from None
    try:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout_s)
            sock.connect(path)
            sock.sendall(wire.encode_line(command.to_wire()))
            data = b""
            while not data.endswith(b"\n") and len(data) <= p.MAX_REPLY:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        finally:
            sock.close()
    except FileNotFoundError:
        raise ControlError(f"no evsed daemon is running (no socket at {path})") from None
    except ConnectionRefusedError:
        raise ControlError(f"no evsed daemon answers on {path}") from None
    except PermissionError:
        raise ControlError(f"permission denied on {path}: join the daemon's group") from None
    except (OSError, TimeoutError) as exc:
        raise ControlError(f"control socket {path}: {exc}") from None
    try:
        return command.reply(wire.decode_line(data))
    except wire.WireError as exc:
        raise ControlError(f"garbled reply from {path}: {exc}") from None


def ask(runtime_dir: os.PathLike[str] | str, command: p.Command[R], timeout_s: float = 3.0) -> R:
    """request(), for callers that cannot go on without the reply: a Failure raises DaemonError."""
    reply = request(runtime_dir, command, timeout_s)
    if isinstance(reply, p.Failure):
        raise p.DaemonError(reply)
    return reply
