"""Where each key of a TOML file stands: (table path, key) -> line number.

tomllib gives values but no positions; config errors must name the line, so this
scans the text the simple way TOML allows (headers, key = value, inline tables).
"""

from __future__ import annotations

import re

_BARE = r"[A-Za-z0-9_-]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"|\'[^\']*\''
_KEY = rf"(?:{_BARE}|{_QUOTED})(?:\s*\.\s*(?:{_BARE}|{_QUOTED}))*"
_HEADER = re.compile(rf"^\s*(\[\[|\[)\s*({_KEY})\s*\]\]?\s*(#.*)?$")
_ASSIGN = re.compile(rf"^\s*({_KEY})\s*=\s*(.*)$")
_INLINE_KEY = re.compile(rf"(?:^|[{{,])\s*({_KEY})\s*=")


def _split_key(key: str) -> list[str]:
    parts = re.findall(rf"{_BARE}|{_QUOTED}", key)
    return [p[1:-1] if p[:1] in "\"'" else p for p in parts]


def key_lines(text: str) -> dict[str, int]:
    """Map "table.key" paths (arrays of tables as name[i]) to 1-based line numbers.

    A table's own header maps under its path alone.
    """
    lines: dict[str, int] = {}
    counts: dict[str, int] = {}
    table: list[str] = []
    multiline: str | None = None
    depth = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw
        if multiline is not None:
            if multiline in line:
                multiline = None
            continue
        if depth > 0:  # inside a multi-line array
            depth += _brackets(line)
            continue
        header = _HEADER.match(line)
        if header:
            parts = _split_key(header.group(2))
            if header.group(1) == "[[":
                base = ".".join(_indexed(parts[:-1], counts, table)) or ""
                name = f"{base}.{parts[-1]}" if base else parts[-1]
                index = counts.get(name, -1) + 1
                counts[name] = index
                table = [*(_indexed(parts[:-1], counts, table)), f"{parts[-1]}[{index}]"]
            else:
                table = _indexed(parts, counts, table)
            lines.setdefault(".".join(table), number)
            continue
        assign = _ASSIGN.match(line)
        if not assign:
            continue
        path = ".".join([*table, *_split_key(assign.group(1))])
        lines.setdefault(path, number)
        value = assign.group(2)
        for quote in ('"""', "'''"):
            if value.count(quote) == 1:
                multiline = quote
        if value.lstrip().startswith("{"):
            for inner in _INLINE_KEY.findall(value):
                lines.setdefault(f"{path}.{'.'.join(_split_key(inner))}", number)
        elif value.lstrip().startswith("["):
            depth = _brackets(value)
    return lines


def _brackets(text: str) -> int:
    """Net [ minus ] outside strings and comments."""
    code = re.sub(_QUOTED, "", text).split("#", 1)[0]
    return code.count("[") - code.count("]")


def _indexed(parts: list[str], counts: dict[str, int], current: list[str]) -> list[str]:
    """Resolve a header's parts against arrays of tables seen so far ([x.y] inside [[x]])."""
    out: list[str] = []
    for part in parts:
        name = ".".join([*(p.split("[")[0] for p in out), part]) if out else part
        plain = ".".join(out + [part]) if out else part
        index = counts.get(plain, counts.get(name))
        out.append(f"{part}[{index}]" if index is not None else part)
    return out
