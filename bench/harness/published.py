"""The published reference numbers (``results/reference/published.csv``), read and checked.

Tables show these rows beside the suite's own (``collect.published_rows``), so a wrong row would be
printed as a published result. :func:`read_published` checks the whole file before any row is used:
every row has the header's fields (an unquoted comma in a value adds one), every recall and RSUM is a
plain number in range (``76.5*``: a footnote mark typed into the number), the protocol is one the suite
knows, and RSUM is the sum of the row's six recalls (within rounding of one decimal per recall). The
first problem is a :class:`PublishedCSVError`: one line naming the file, the line, the column, the
value and the fix.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pandas as pd

from bench.metrics import RECALL_KEYS
from bench.protocols import PROTOCOLS
from bench.values import binary_file, shown

REQUIRED = ("matcher", "strategy", "protocol", *RECALL_KEYS, "rsum", "source")
# Six recalls rounded to 0.1 each add up to at most 6 x 0.05 = 0.3 away from a sum rounded alike; the
# published tables round the sum of the unrounded recalls, so half of that and the RSUM's own 0.05.
RSUM_TOLERANCE = 0.15


class PublishedCSVError(ValueError):
    """A row of the published-reference CSV that cannot be shown as a published result."""


def _number(path: Path, line: int, column: str, text: str, high: float) -> float:
    fix = ("write it as a plain number (e.g. 76.5); notes and footnote marks belong in the source column"
           if column != "rsum" else "write the sum of the six recalls as a plain number")
    try:
        value = float(text)
    except ValueError:
        raise PublishedCSVError(f"{path}:{line}: column {column}: {shown(text)} is not a number; {fix}") from None
    if not math.isfinite(value) or not 0 <= value <= high:
        raise PublishedCSVError(f"{path}:{line}: column {column}: {shown(text)} is outside [0, {high:g}]; {fix}")
    return value


def check_row(path: Path, line: int, row: dict[str, str]) -> None:
    """One data row: its protocol, its recalls and its RSUM (= the sum of the recalls)."""
    if row["protocol"] not in PROTOCOLS:
        raise PublishedCSVError(f"{path}:{line}: column protocol: {shown(row['protocol'])} is not a protocol; "
                                f"use one of {', '.join(PROTOCOLS)}")
    recalls = [_number(path, line, k, row[k], 100) for k in RECALL_KEYS]
    rsum = _number(path, line, "rsum", row["rsum"], 600)
    if abs(sum(recalls) - rsum) > RSUM_TOLERANCE + 1e-9:
        raise PublishedCSVError(
            f"{path}:{line}: column rsum: {shown(row['rsum'])} is not the sum of the row's six recalls "
            f"({sum(recalls):.1f}, within ±{RSUM_TOLERANCE}); correct the recall or the RSUM that was mistyped "
            "(copy both from the source)")


def read_published(path: str | Path) -> pd.DataFrame:
    """The CSV as strings (one row per published result), every row checked (:func:`check_row`)."""
    path = Path(path)
    data = path.read_bytes()
    if problem := binary_file(data, "published-results CSV"):
        raise PublishedCSVError(f"{path}: {problem}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PublishedCSVError(f"{path}: not UTF-8 (byte {e.start}); re-save the file as UTF-8") from None
    reader = csv.reader(text.splitlines(keepends=True))
    header = next(reader, None)
    if header is None:
        raise PublishedCSVError(f"{path}: empty; the first line names the columns ({', '.join(REQUIRED)})")
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise PublishedCSVError(f"{path}:1: no column {', '.join(missing)} in the header {shown(header)}; "
                                f"the columns are {', '.join(REQUIRED)}")
    rows = []
    for fields in reader:
        line = reader.line_num
        if not any(f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            raise PublishedCSVError(
                f"{path}:{line}: {len(fields)} fields, the header has {len(header)} (a comma inside a value "
                f"that is not quoted?); put a value holding a comma in double quotes, e.g. \"Chen et al., 2021\"")
        row = dict(zip(header, fields, strict=True))
        check_row(path, line, row)
        rows.append({k: v if v != "" else None for k, v in row.items()})  # an empty field is missing, as pandas'
    return pd.DataFrame(rows, columns=header, dtype=str)
