"""How many finished results a table holds, so that ``collect`` and ``readme`` never replace a table by one with
fewer (a fresh clone without ``results/runs`` once turned the committed demo table into "0/3 (3 pending)" rows,
exit 0, and ``readme`` put it into README.md). Light on purpose (no pandas, no torch): ``readme`` reads it.

A table's count is the sum of its rows' done seeds (``n_done`` in the summary CSV, the numerator of ``n`` =
``done/declared`` in the Markdown); published reference rows count nothing.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

_N = re.compile(r"^\s*(\d+)\s*/\s*\d+")


def csv_done(path: str | Path) -> int | None:
    """Done seeds over the rows of a summary CSV that ``collect`` wrote (None: no such file, or not one)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    if rows and "n_done" not in rows[0]:
        return None
    total = 0
    for r in rows:
        try:
            n = float(r["n_done"])
        except (TypeError, ValueError):  # a published row (empty) or a broken value: counts nothing
            continue
        if not math.isnan(n) and str(r.get("published")).lower() != "true":
            total += int(n)
    return total


def md_done(text: str) -> int:
    """Done seeds over the rows of the Markdown tables in ``text`` (the ``n`` column: ``3/3``,
    ``1/2 (1 mixed-code)``)."""
    total, column = 0, None
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.lstrip().startswith("|") else None
        if cells is None:
            column = None
        elif column is None:
            column = cells.index("n") if "n" in cells else -1
        elif 0 <= column < len(cells) and (m := _N.match(cells[column])):
            total += int(m.group(1))
    return total


def table_done(tables: str | Path, name: str) -> tuple[int | None, Path]:
    """Done seeds of the table ``name`` in ``tables`` and the file counted: its summary CSV, else (a CSV
    deleted or never committed) its Markdown; (None, csv) when neither is there."""
    csv_path, md_path = Path(tables) / f"{name}.csv", Path(tables) / f"{name}.md"
    if (n := csv_done(csv_path)) is not None:
        return n, csv_path
    try:
        return md_done(md_path.read_text(encoding="utf-8")), md_path
    except (OSError, UnicodeDecodeError):
        return None, csv_path


def fewer_done(new: int, old: int | None, new_what: str, old_what: str, fix: str) -> str | None:
    """The refusal of a table of ``new`` done seeds replacing one of ``old`` (None: not fewer)."""
    if old is None or new >= old:
        return None
    return (f"{new_what} holds {new} done result(s), fewer than the {old} of {old_what} that it would replace "
            f"(a table never loses finished results silently); {fix}, or --force to replace it anyway")
