"""A suite's tables as LaTeX (``results/tables/<suite>.tex``): one ``table*`` per block, booktabs rules.

Each block is a float spanning both columns (``table*``) whose tabular is scaled to ``\\textwidth``
(``\\resizebox``), with a short caption (suite, dataset, protocol, the data line), a
``\\label{tab:<suite>-<dataset>-<protocol>}`` and, under the tabular in small type, the block's verdict,
"seeds needed" line, notes and the method details. The file needs ``\\usepackage{booktabs}`` and
``\\usepackage{graphicx}`` (its first line says so); :func:`document` wraps it into a compilable document.

Bold (:func:`best_cells`): in each metric column (the recalls and RSUM, own rows only, never a published
row), the best mean and every row whose 95% interval of the mean over its seeds overlaps the best row's
interval: those rows are not told apart by the seeds run (a row with one seed has its value as its
interval). The ΔRSUM column is not bolded: its interval is printed.
"""

from __future__ import annotations

import math
import re

from scipy import stats as sps

PREAMBLE = "% requires \\usepackage{booktabs} (rules) and \\usepackage{graphicx} (\\resizebox)"

_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$",
                "{": r"\{", "}": r"\}", "^": r"\textasciicircum{}", "~": r"\textasciitilde{}"}
_UNICODE = [("±", r"$\pm$"), ("Δ", r"$\Delta$"), ("∞", r"$\infty$"), ("—", "---"), ("–", "--"),
            ("†", r"$^\dagger$"), ("≠", r"$\neq$"), ("√", r"$\surd$"), ("·", r"$\cdot$"), ("−", "-"),
            ("½", r"$\frac{1}{2}$"), ("≥", r"$\geq$"), ("≤", r"$\leq$"), ("α", r"$\alpha$"), ("β", r"$\beta$"),
            ("²", r"$^2$"), ("≈", r"$\approx$"), ("…", r"\ldots{}"), ("×", r"$\times$"), ("→", r"$\to$"),
            ("“", "``"), ("”", "''"), ("’", "'"), ("‘", "`"), ("⁷", r"$^7$"), ("⁶", r"$^6$"), ("¹", r"$^1$")]


def tex(text) -> str:
    """``text`` as LaTeX text: one line, its special characters escaped, the symbols the tables use as math."""
    s = re.sub(r"[\\&%_#${}^~]", lambda m: _TEX_SPECIAL[m.group()], " ".join(str(text).splitlines()))
    s = s.replace("<", r"$<$").replace(">", r"$>$")  # OT1 fonts print them as ¡ ¿ in text
    for a, b in _UNICODE:
        s = s.replace(a, b)
    return s


def label(*parts: str) -> str:
    """``tab:<parts joined by '-'>``, each part reduced to letters, digits and '-'."""
    return "tab:" + "-".join(re.sub(r"[^A-Za-z0-9]+", "-", str(p)).strip("-").lower() for p in parts if p)


def interval(mean: float, sd: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """The t-interval of a mean over ``n`` seeds (the point itself with one seed or no sd)."""
    if n is None or n < 2 or sd is None or math.isnan(sd):
        return mean, mean
    half = float(sps.t.ppf((1 + level) / 2, n - 1)) * sd / math.sqrt(n)
    return mean - half, mean + half


def best_cells(values: list[dict | None], columns: list[str]) -> set[tuple[int, str]]:
    """``(row, column)`` to print in bold. ``values[i]``: ``{column: (mean, sd, n)}`` of an own row, None for a
    published row. Per column: the best mean, and every row whose interval overlaps the best row's."""
    out = set()
    for col in columns:
        cand = [(i, v[col]) for i, v in enumerate(values) if v and col in v and not math.isnan(v[col][0])]
        if not cand:
            continue
        best_i, (m, sd, n) = max(cand, key=lambda x: x[1][0])
        lo_best, _ = interval(m, sd, n)
        for i, (mi, sdi, ni) in cand:
            _, hi = interval(mi, sdi, ni)
            if i == best_i or hi >= lo_best:
                out.add((i, col))
    return out


def table(block: dict, caption: str, tab_label: str, note: str) -> str:
    """One block as a ``table*``: caption and label on top, the tabular scaled to the text width, ``note`` (the
    verdict, notes and method details) under it in small type. ``block``: ``header``, ``rows`` (strings),
    ``values`` (for :func:`best_cells`, aligned with ``rows``) and ``metric_columns`` (header indices)."""
    header = block["header"]
    cols = block.get("metric_columns", [])
    bold = best_cells(block.get("values") or [None] * len(block["rows"]), [header[j] for j in cols])
    align = "ll" + "".join("l" if ("[" in h or h == "strategy") else "r" for h in header[2:])
    lines = [r"\begin{table*}[t]", r"\centering", rf"\caption{{{tex(caption)}}}", rf"\label{{{tab_label}}}",
             r"\resizebox{\textwidth}{!}{%", rf"\begin{{tabular}}{{{align}}}", r"\toprule",
             " & ".join(tex(h) for h in header) + r" \\", r"\midrule"]
    for i, row in enumerate(block["rows"]):
        cells = [tex(c) for c in row]
        for j in cols:
            if (i, header[j]) in bold:
                cells[j] = rf"\textbf{{{cells[j]}}}"
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}", r"\par\smallskip",
              rf"\begin{{minipage}}{{\textwidth}}\footnotesize {tex(note)}\end{{minipage}}", r"\end{table*}"]
    return "\n".join(lines) + "\n"


def document(body: str) -> str:
    """A minimal compilable document around a ``.tex`` of tables (what a paper's preamble must provide)."""
    return "\n".join([r"\documentclass{article}", r"\usepackage[T1]{fontenc}", r"\usepackage{booktabs}",
                      r"\usepackage{graphicx}", r"\begin{document}", body, r"\end{document}", ""])


def balance_problems(text: str) -> list[str]:
    """Unbalanced braces or environments of a LaTeX text (escaped braces ``\\{`` ``\\}`` ignored)."""
    problems = []
    depth = 0
    for n, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("%"):
            continue
        for ch in re.sub(r"\\[{}%]", "", line):
            depth += {"{": 1, "}": -1}.get(ch, 0)
            if depth < 0:
                problems.append(f"line {n}: '}}' closes nothing")
                depth = 0
    if depth:
        problems.append(f"{depth} '{{' never closed")
    stack = []
    for kind, env in re.findall(r"\\(begin|end)\{([^}]*)\}", text):
        if kind == "begin":
            stack.append(env)
        elif not stack or stack.pop() != env:
            problems.append(f"\\end{{{env}}} does not close the last \\begin")
    problems += [f"\\begin{{{env}}} never ended" for env in stack]
    return problems
