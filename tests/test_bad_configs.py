"""The bad-config corpus (tests/configs/bad, expected.tsv) and special files: every broken config
gives `evsed check` one line naming the file, the line and the key, exit status 2, no traceback."""

from __future__ import annotations

import gc
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import structlog

from evsed.cli import main
from evsed.shell import logs

CORPUS = Path(__file__).parent / "configs" / "bad"
BASE = ('[charger]\nid = "bad"\n\n[[connector]]\nid = 1\n[connector.pilot]\nbackend = "sim"\n'
        '[connector.contactor]\nbackend = "sim"\n')  # valid; the corpus's files build on it from line 10


def expected() -> dict[str, tuple[int | None, str]]:
    out = {}
    for line in (CORPUS / "expected.tsv").read_text().splitlines():
        if line.startswith("#"):
            continue
        name, number, key = line.split("\t")
        out[name] = (None if number == "-" else int(number), key)
    return out


EXPECTED = expected()

# Gaps in the config's checks that this corpus found (listed for the engineer hardening config);
# strict: each fails the suite once fixed, so the mark comes off.
GAPS = {
}


def check(path: Path, capsys) -> tuple[int, str]:
    gc.collect()  # what earlier tests left for the collector says so now, not in this check's stderr
    capsys.readouterr()
    try:
        code = main(["check", "-c", str(path)])
    finally:  # a config that loads gets as far as configuring the logs: leave them as other tests expect
        logs.flush()
        structlog.reset_defaults()
        logging.getLogger().handlers[:] = []
        logging.getLogger().setLevel(logging.WARNING)
    captured = capsys.readouterr()
    return code, captured.err


def assert_one_line_naming(err: str, path: Path, line: int | None, key: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, err[:2000]
    assert "Traceback" not in err
    where = re.escape(f"evsed: {path}") + (f":{line}: " if line is not None else ": ")
    assert re.match(where, lines[0]), lines[0][:500]
    assert key in lines[0][len(f"evsed: {path}"):], lines[0][:500]
    assert len(lines[0]) < 400  # a hostile value is shortened, not echoed


def test_the_corpus_has_at_least_a_hundred_files_each_with_an_expectation():
    files = sorted(p.name for p in CORPUS.glob("*.toml"))
    assert len(files) >= 100 and files == sorted(EXPECTED)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=GAPS[n]))
                                  if n in GAPS else n for n in sorted(EXPECTED)])
def test_a_broken_config_gives_one_line_naming_file_line_and_key(name, capsys):
    path = CORPUS / name
    line, key = EXPECTED[name]
    code, err = check(path, capsys)
    assert code == 2, err[:2000]
    assert_one_line_naming(err, path, line, key)


# --- special files and sizes, made here --------------------------------------------------------------------

def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path, capsys):
    fifo = tmp_path / "evsed.toml"
    os.mkfifo(fifo)
    code, err = check(fifo, capsys)
    assert code == 2 and err == f"evsed: {fifo}: not a regular file\n"


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null", "/dev/urandom"])
def test_a_device_file_is_refused(device, capsys):
    code, err = check(Path(device), capsys)
    assert code == 2 and err == f"evsed: {device}: not a regular file\n"


def test_a_directory_a_missing_file_and_a_symlink_loop_are_refused(tmp_path, capsys):
    loop = tmp_path / "loop.toml"
    loop.symlink_to(loop)
    for path in (tmp_path, tmp_path / "missing.toml", loop):
        code, err = check(path, capsys)
        assert code == 2, err
        assert err.startswith(f"evsed: {path}: ") and len(err.splitlines()) == 1


def test_a_runaway_file_is_refused_by_its_size(tmp_path, capsys):
    big = tmp_path / "evsed.toml"
    with open(big, "wb") as f:
        f.write(b"[charger]\n")
        f.truncate(40 << 20)  # sparse: 40 MiB of NULs
    code, err = check(big, capsys)
    assert code == 2 and err == f"evsed: {big}: larger than 32 MiB: not a config file\n"


def test_a_megabyte_string_and_fifty_thousand_tables(tmp_path, capsys):
    for text, line, key in (('[charger]\nid = "' + "x" * 2_000_000 + '"\n', 2, "[charger] id"),
                            (BASE + "".join(f"[t{i}]\n" for i in range(50_000)), 10, "t0")):
        path = tmp_path / "evsed.toml"
        path.write_text(text)
        code, err = check(path, capsys)
        assert code == 2
        assert_one_line_naming(err, path, line, key)


def test_the_command_itself_exits_2_with_one_line_and_no_traceback(tmp_path):
    """The same through a real process, on a few files of each kind and a FIFO."""
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    names = [n for n in sorted(EXPECTED) if n not in GAPS][::15]
    for path in [CORPUS / n for n in names] + [fifo]:
        proc = subprocess.run([sys.executable, "-m", "evsed", "check", "-c", str(path)], capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 2 and proc.stdout == "", (path, proc.stdout, proc.stderr)
        assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
