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
    quote: str | None = None  # a multi-line string open across lines
    depth = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if len(line) > MAX_LINE:
            assign = _ASSIGN.match(line) if depth == 0 and quote is None else None
            name = [*table, *_split_key(assign.group(1))] if assign else key or table
            return number, name, f"a line of {len(line)} characters, at most {MAX_LINE}"
        value = line
        if depth == 0 and quote is None:
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
            value = assign.group(2)
        code, quote = _code(value, quote)
        if _LONG_NUMBER.search(code):
            return number, key, f"a number with more than {MAX_DIGITS} digits"
        for bracket in _BRACKET.findall(code):
            depth = depth + 1 if bracket in "[{" else max(depth - 1, 0)
            if depth > MAX_NESTING:
                return number, key, f"arrays or inline tables nested more than {MAX_NESTING} deep"
    return None


_LONG_NUMBER = re.compile(rf"\d(?:_?\d){{{MAX_DIGITS}}}")
_BRACKET = re.compile(r"[\[\]{}]")
_OUTSIDE = re.compile(r"[#\"']")
_IN_BASIC = re.compile(r'[\\"]')


def _code(line: str, quote: str | None) -> tuple[str, str | None]:
    """The part of a line outside strings and comments, and the multi-line string ('\'\'\'' or
    '\"\"\"') still open at its end. One pass: linear in the line, whatever it holds."""
    out: list[str] = []
    i, n = 0, len(line)
    while i < n:
        if quote is None:
            found = _OUTSIDE.search(line, i)
            if found is None:
                out.append(line[i:])
                break
            out.append(line[i:found.start()])
            char, i = found.group(), found.start()
            if char == "#":
                break
            quote = char * 3 if line.startswith(char * 3, i) else char
            i += len(quote)
        elif quote[0] == "'":  # literal: no escapes
            end = line.find(quote, i)
            if end < 0:
                break
            i, quote = end + len(quote), None
        else:  # basic: a backslash escapes the next character
            found = _IN_BASIC.search(line, i)
            while found is not None and found.group() == "\\":
                found = _IN_BASIC.search(line, found.start() + 2)
            if found is None:
                break
            if line.startswith(quote, found.start()):
                i, quote = found.start() + len(quote), None
            else:
                i = found.start() + 1
    if quote is not None and len(quote) == 1:
        quote = None  # a one-line string left open is a syntax error; tomllib names it
    return "".join(out), quote


def _brackets(text: str) -> int:
    """Net [ minus ] outside strings and comments."""
    code, _ = _code(text, None)
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
