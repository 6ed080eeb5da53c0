"""Adding a strategy is one new file in ``strategies/``: discovered by the registry, validated by the
suite schema, estimated by ``show``, trained by ``sweep`` and tabled by ``collect`` with no other file
of the tree touched (the test runs a copy of the tree with that one file added)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

THROWAWAY = '''"""A throwaway strategy: the target plus an EMA copy of it that is never reported."""

from strategies import register
from strategies.base import Branch, Param, Strategy


@register
class Shadow(Strategy):
    name = "shadow"
    scenario = "mss"
    PARAMS = {"keep": Param("the EMA momentum of the shade", ge=0, le=1)}

    def __init__(self, keep: float = 0.9, **base):
        super().__init__(**base)
        self.keep = keep

    def branches(self):
        return [Branch("shade", init="copy:target", update="ema:target", mode="eval"), Branch("target")]

    def momentum(self, step, total_steps):
        return self.keep

    def losses(self, scores, ctx):
        return {"target": self.base(scores["target"], ctx, "target")}
'''


def _copy_tree(dst: Path) -> Path:
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    return dst


def test_a_strategy_is_one_new_file(tiny_data, tmp_path):
    tree = _copy_tree(tmp_path / "tree")
    before = {p.relative_to(tree): p.read_bytes() for p in tree.rglob("*") if p.is_file()}
    (tree / "strategies" / "shadow.py").write_text(THROWAWAY)
    suite = tmp_path / "shadowed.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "shadowed",
        "datasets": [{"name": "f30k_precomp", "label": "tiny", "data_root": str(tiny_data)}],
        "matchers": [{"name": "vse_infty", "label": "VSE"}],
        "strategies": [{"name": "baseline"}, {"name": "shadow", "params": {"keep": 0.5}}],
        "seeds": [0], "scale": "smoke",
        "scales": {"smoke": {"schedule": {"default": {"epochs": 1, "batch_size": 32, "lr": 2e-3,
                                                      "max_steps_per_epoch": 2}},
                             "matchers": {"vse_infty": {"embed_size": 16, "word_dim": 8}}}},
        "eval": {"dev_images": 30},
    }))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITM_BENCH_")} | {
        "PYTHONPATH": str(tree), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}

    def bench(*args):
        out = subprocess.run([sys.executable, "-m", "bench", *map(str, args)], capture_output=True, text=True,
                             cwd=tree, env=env, timeout=600)
        assert out.returncode == 0, f"bench {args}:\n{out.stdout}\n{out.stderr}"
        return out.stdout

    root, tables = tmp_path / "runs", tmp_path / "tables"
    shown = bench("show", suite, "--root", root)
    assert "shadow(keep=0.5)" in shown
    bench("sweep", suite, "--executor", "inline", "--root", root)
    (run,) = [p for p in (root / "shadowed").iterdir() if (p / "done").exists()
              and json.loads((p / "result.json").read_text())["cell"]["strategy"]["name"] == "shadow"]
    result = json.loads((run / "result.json").read_text())
    assert result["strategy"]["branches"][0]["update"] == "ema:target" and result["reported_branch"] == "target"
    assert result["cost"]["forward_passes_per_step"] == 2
    bench("collect", suite, "--root", root, "--tables", tables, "--figures", tmp_path / "figures")
    table = "\n".join(p.read_text() for p in tables.rglob("*.md"))
    assert "shadow(keep=0.5)" in table and "baseline" in table
    after = {p.relative_to(tree): p.read_bytes() for p in tree.rglob("*") if p.is_file()
             and "__pycache__" not in p.parts}
    assert set(after) - set(before) == {Path("strategies/shadow.py")}  # one new file, nothing else written
    assert all(after[k] == v for k, v in before.items())
