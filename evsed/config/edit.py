"""Changes the daemon makes to its own config file: a card learned from the page appended as a
[[card]] table, the host's text (comments, order, layout) kept as written, the file replaced whole.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def card_block(uid: str, name: str, group: str) -> str:
    """A [[card]] table for the end of the file (TOML basic strings: JSON's escapes are TOML's)."""
    lines = ["[[card]]", f"uid = {json.dumps(uid)}", f"name = {json.dumps(name, ensure_ascii=False)}"]
    if group:
        lines.append(f"group = {json.dumps(group, ensure_ascii=False)}")
    return "\n".join(lines) + "\n"


def with_card(text: str, block: str) -> str:
    """The file's text with the block after everything it holds (one blank line between)."""
    return (text.rstrip("\n") + "\n\n" if text.strip() else "") + block


def writable(path: Path) -> str | None:
    """Why the daemon cannot replace the file (None: it can): a new file is written beside it
    and renamed over it, so both the file's directory and the file must be writable."""
    for where in (path.parent, path):
        if not os.access(where, os.W_OK):
            return f"{where} is not writable by this process (uid {os.geteuid()})"
    return None


def write_atomically(path: Path, text: str) -> None:
    """Replace the file with text: written beside it, flushed to disk, then renamed over it, so that
    a power cut leaves the old file or the new one, never half of one. Keeps the file's mode and,
    where this process may, its owner."""
    old = path.stat()
    tmp = path.with_name(f".{path.name}.evsed-new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, old.st_mode & 0o777)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, old.st_mode & 0o777)
    try:
        os.chown(tmp, old.st_uid, old.st_gid)
    except PermissionError:
        pass  # the daemon's user: the file becomes its own, the mode is the host's
    os.replace(tmp, path)
    dirfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)
