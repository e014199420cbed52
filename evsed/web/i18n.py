"""The page's languages: one plain TOML message file per language (messages/*.toml, flat keys),
the browser's Accept-Language choosing among them, English for anything a file lacks.
"""

from __future__ import annotations

import functools
import re
import string
import tomllib
from pathlib import Path
from typing import Any

MESSAGES_DIR = Path(__file__).with_name("messages")
DEFAULT = "en"
LANGUAGES = ("en", "de", "nl", "fr")  # the field's biggest markets first; each has messages/<lang>.toml
_RANGE = re.compile(r"^\s*([A-Za-z]{1,8})(?:-[A-Za-z0-9]{1,8})*\s*(?:;\s*q\s*=\s*([01](?:\.\d{0,3})?))?\s*$")


@functools.cache
def catalog(lang: str) -> dict[str, str]:
    """Every message of one language, English filling what its file lacks."""
    english = _read(DEFAULT)
    return english if lang == DEFAULT else {**english, **_read(lang)}


def _read(lang: str) -> dict[str, str]:
    if lang not in LANGUAGES:
        raise ValueError(f"no messages for language {lang!r}")
    with open(MESSAGES_DIR / f"{lang}.toml", "rb") as f:
        data = tomllib.load(f)
    return {str(k): str(v) for k, v in data.items()}


def negotiate(accept_language: str | None) -> str:
    """The best of LANGUAGES for an Accept-Language header (RFC 9110 §12.5.4), else English."""
    best, best_q = DEFAULT, 0.0
    for order, part in enumerate((accept_language or "")[:512].split(",")[:32]):
        m = _RANGE.match(part)
        if not m:
            continue
        lang, q = m.group(1).lower(), float(m.group(2)) if m.group(2) else 1.0
        if lang in LANGUAGES and q > best_q:
            best, best_q = lang, q
    return best


class Messages:
    """One language's messages: t("key", name=value) fills {name} placeholders."""

    def __init__(self, lang: str = DEFAULT):
        self.lang = lang
        self.table = catalog(lang)

    def t(self, key: str, **values: Any) -> str:
        text = self.table.get(key, key)
        return text.format(**values) if values else text

    def __call__(self, key: str, **values: Any) -> str:
        return self.t(key, **values)


def placeholders(text: str) -> set[str]:
    """The {name} fields of a message (a translation must keep the same ones)."""
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


ENGLISH = Messages(DEFAULT)
