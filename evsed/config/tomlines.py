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


MAX_NESTING = 16  # arrays and inline tables inside each other; a config needs 3 (tomllib recurses)
MAX_DIGITS = 40  # digits in one number; more is no setting (tomllib refuses 4300+ with a traceback)
MAX_KEY_PARTS = 32  # dotted parts of one table header or key
MAX_LINE = 1 << 20  # characters in one line; tomllib takes seconds over a 10 MB string


def beyond_limits(text: str) -> tuple[int, list[str], str] | None:
    """The first line that is too long, nests too deep, or holds too long a number or dotted name:
    (line, key path parts, problem), or None. Run before tomllib, which would recurse or raise."""
    table: list[str] = []
    key: list[str] = []
    multiline: str | None = None
    depth = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if multiline is not None:
            if multiline in line:
                multiline = None
            continue
        code = line
        if len(line) > MAX_LINE:
            assign = _ASSIGN.match(line[:4096]) if depth == 0 else None
            name = [*table, *_split_key(assign.group(1))] if assign else key or table
            return number, name, f"a line of {len(line)} characters, at most {MAX_LINE}"
        if depth == 0:
            header = _HEADER.match(line)
            if header:
                table, key = _split_key(header.group(2)), []
                if len(table) > MAX_KEY_PARTS:
                    return number, table[:1], f"table header with {len(table)} dotted parts, at most {MAX_KEY_PARTS}"
                continue
            assign = _ASSIGN.match(line)
            if not assign:
                continue
            key = [*table, *_split_key(assign.group(1))]
            if len(key) > MAX_KEY_PARTS:
                return number, key[:1], f"key with {len(key)} dotted parts, at most {MAX_KEY_PARTS}"
            code = assign.group(2)
            for quote in ('"""', "'''"):
                if code.count(quote) == 1:
                    multiline = quote
        code = re.sub(_QUOTED, "", code).split("#", 1)[0]
        if re.search(rf"\d(?:_?\d){{{MAX_DIGITS}}}", code):
            return number, key, f"a number with more than {MAX_DIGITS} digits"
        for char in code:
            if char in "[{":
                depth += 1
                if depth > MAX_NESTING:
                    return number, key, f"arrays or inline tables nested more than {MAX_NESTING} deep"
            elif char in "]}":
                depth = max(depth - 1, 0)
    return None


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
