"""Sections of results/perf.md that different commands own: each between its own pair of markers.

``make bench`` writes the whole file but carries over the sections it does not generate (e.g. the one
``make bench-gpu`` wrote on a GPU machine); ``make bench-gpu`` replaces only its own section.
"""

from __future__ import annotations

import re
from pathlib import Path

from bench.atomic import atomic_write_bytes


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def read_section(path: Path, name: str) -> list[str] | None:
    """The lines of section ``name`` of ``path`` (markers included), or None when absent."""
    if not path.is_file():
        return None
    begin, end = markers(name)
    m = re.search(re.escape(begin) + r".*?" + re.escape(end), path.read_text(), flags=re.S)
    return m.group(0).splitlines() if m else None


def replace_section(path: Path, name: str, lines: list[str]) -> None:
    """Put ``lines`` between the markers of section ``name`` in ``path``: in place of the old section, else
    appended; everything else in the file is kept as it was."""
    begin, end = markers(name)
    block = "\n".join([begin, *lines, end])
    text = path.read_text() if path.is_file() else ""
    pattern = re.escape(begin) + r".*?" + re.escape(end)
    if re.search(pattern, text, flags=re.S):
        text = re.sub(pattern, lambda _: block, text, count=1, flags=re.S)
    else:
        text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.encode(), fault="report.before_rename")


def parse_only(ap, text: str, choices: list[str], what: str) -> list[str]:
    """The comma-separated ``--only`` names, each one of ``choices``; an argparse error naming the others."""
    only = [n for n in text.split(",") if n]
    unknown = set(only) - set(choices)
    if unknown:
        ap.error(f"--only: unknown {what} {sorted(unknown)}; choose from {','.join(choices)}")
    return only
