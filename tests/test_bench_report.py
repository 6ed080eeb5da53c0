"""`make bench ARGS="--only …"` (README, Benchmarks) replaces only its sections of an existing report and keeps the
rest byte for byte."""

from pathlib import Path

import pytest

from bench.benchmarks.__main__ import section_name
from bench.benchmarks.report import markers
from tests.test_journeys import make, make_checkout

REPO = Path(__file__).resolve().parents[1]
README_LINE = '`make bench ARGS="--only cli"`'


@pytest.mark.slow
def test_a_part_measured_again_replaces_only_its_section(tmp_path):
    assert README_LINE in (REPO / "README.md").read_text()
    checkout = make_checkout(tmp_path / "checkout")
    report = checkout / "results" / "perf.md"
    before = report.read_text()  # the committed report
    begin, end = markers(section_name("cli"))
    assert before.count(begin) == 1  # the committed report holds the section: the run replaces it
    make(checkout, "bench", ARGS="--only cli")  # in a copy that is not a git checkout (commit: ?)
    text = report.read_text()
    assert text.split(begin)[0] == before.split(begin)[0] and text.split(end)[1] == before.split(end)[1]
    assert text.count(begin) == 1 and text.count(end) == 1
    section = text[text.index(begin):text.index(end)]
    assert section != before[before.index(begin):before.index(end)]  # measured now
    assert '*This section alone: `make bench ARGS="--only cli"` (' in section and "quick sizes" not in section
    assert "## Command-line start-up" in section and "| `python -m bench --help` |" in section
