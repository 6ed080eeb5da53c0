
"""Multi-process training (bench.distributed): 2 CPU ranks over gloo reproduce a 1-process run.

Workers are spawned with torch.multiprocessing; each joins the group through the standard environment
(RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), exactly as a torchrun/submitit task would.
"""

import os
import socket
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from bench import checkpoint as ckpt
from bench.spec import Cell
from bench.train import run_cell
from tests.test_train import Recorder  # the tracker stand-in that keeps what the trainer logs

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(fn, *args):
    port = _free_port()
    mp.spawn(_join_then, args=(fn, port, args), nprocs=WORLD, join=True)


def _join_then(rank, fn, port, args):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from bench import distributed

    assert distributed.init_from_env("cpu") == (rank, WORLD)
    try:
        fn(rank, *args)
    finally:
        torch.distributed.destroy_process_group()


# ------------------------------------------------------------------------------------------------
# gather-with-grad + gradient averaging == the 1-process gradient


class TinyMatcher(torch.nn.Module):
    """Image: l2norm(W x) [n, 4]; caption: per-word features (W_e e_w) [n, L, 4] + lengths, L varies
    per batch; score: exp(s)-free cosine of the image with the l2-normalised sum of the words."""

    def __init__(self):
        super().__init__()
        self.img = torch.nn.Linear(6, 4)
        self.word = torch.nn.Embedding(20, 4, padding_idx=0)
        self.logit_scale = torch.nn.Parameter(torch.tensor(2.0))

    def encode_images(self, batch):
        return torch.nn.functional.normalize(self.img(batch["images"]), dim=-1)

    def encode_captions(self, batch):
        ids = batch["captions"][:, : int(batch["caption_lengths"].max())]  # trim to the local longest
        return self.word(ids), batch["caption_lengths"]

    def score(self, img, cap):
        words, _ = cap
        return img @ torch.nn.functional.normalize(words.sum(1), dim=-1).t()


def _tiny_batch(b=8):
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(1, 7, (b,), generator=g)
    lengths[0] = 6  # the longest caption is in rank 0's half only: rank 1 pads to it
    caps = torch.randint(1, 20, (b, 6), generator=g) * (torch.arange(6) < lengths[:, None])
    return {"images": torch.randn(b, 6, generator=g), "captions": caps, "caption_lengths": lengths}


def _loss(model, img, cap, kind):
    from strategies import losses as L

    S = model.score(img, cap)
    return L.infonce(S, model.logit_scale) if kind == "infonce" else L.triplet(S, margin=0.2, max_violation=True)


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _check_gradients(rank, kind):
    """Runs on every rank: the averaged distributed gradient equals the 1-process one (both losses)."""
    from bench import distributed
    from models.base import cat_encodings, slice_encoding

    torch.manual_seed(0)
    model = TinyMatcher()
    full = _tiny_batch()
    n = len(full["images"]) // WORLD
    mine = slice(rank * n, (rank + 1) * n)
    local = {k: v[mine] for k, v in full.items()}

    # 1 process: the global batch (captions padded to the global longest, as the collate does)
    _loss(model, model.encode_images(full), model.encode_captions(full), kind).backward()
    reference = _grads(model)
    # this rank's own share: the same loss with every other rank's items detached
    model.zero_grad()
    img, cap = model.encode_images(full), model.encode_captions(full)
    own = torch.zeros(len(full["images"]), 1)
    own[mine] = 1
    img = own * img + (1 - own) * img.detach()
    cap = (own[:, :, None] * cap[0] + (1 - own[:, :, None]) * cap[0].detach(), cap[1])
    _loss(model, img, cap, kind).backward()
    own_share = _grads(model)

    # distributed: local encodings, gathered with gradient, the full loss on every rank
    model.zero_grad()
    img = distributed.gather_encoding(model.encode_images(local))
    cap = distributed.gather_encoding(model.encode_captions(local))
    # the gathered encodings are the 1-process ones (dim 1 zero-padded to the widest rank)
    expected = cat_encodings([model.encode_captions({k: v[s] for k, v in full.items()})
                              for s in (slice(0, n), slice(n, 2 * n))])
    torch.testing.assert_close(cap[0], expected[0])
    torch.testing.assert_close(slice_encoding(img, mine), model.encode_images(local))
    _loss(model, img, cap, kind).backward()
    before = _grads(model)
    # the claim: every rank's backward gives world × its own items' share through the encoders
    for name in ("img.weight", "img.bias", "word.weight"):
        torch.testing.assert_close(before[name], WORLD * own_share[name], atol=1e-6, rtol=1e-5)
    assert not torch.allclose(before["img.weight"], reference["img.weight"], atol=1e-4)
    distributed.average_gradients(model)
    averaged = _grads(model)
    assert averaged.keys() == reference.keys()  # the hinge loss leaves logit_scale without a gradient
    for name, g in averaged.items():
        torch.testing.assert_close(g, reference[name], atol=1e-6, rtol=1e-5, msg=f"{kind} {name}")


def _check_both_losses(rank):
    for kind in ("infonce", "hinge"):
        _check_gradients(rank, kind)


def test_gather_with_grad_and_averaging_give_the_one_process_gradient():
    _spawn(_check_both_losses)


# ------------------------------------------------------------------------------------------------
# run_cell on 2 ranks == run_cell on 1 process with the same global batch

# CLIP tiny: no BatchNorm, no dropout (CLIPConfig dropouts are 0), so the claim holds up to float rounding.
CLIP_TINY = {"name": "clip", "preset": "tiny"}


def _cell(data, batch_size=20, strategy="baseline", params=None) -> Cell:
    return Cell.from_dict({
        "dataset": {"name": "f30k_precomp", "data_root": str(data), "vocab_root": str(data / "vocab")},
        "matcher": dict(CLIP_TINY),
        "strategy": {"name": strategy, "params": dict(params or {})},
        "schedule": {"epochs": 2, "batch_size": batch_size, "lr": 2e-3, "log_every": 1, "max_steps_per_epoch": 3},
        "eval": {"dev_images": 1000, "batch_size": 64},
        "seed": 0,
    })


def _run_rank(rank, cell, run_dir, out_dir):
    with pytest.raises(ValueError, match="not divisible by the 2 ranks"):
        run_cell(cell.replace(schedule=replace(cell.schedule, batch_size=21)), out_dir / f"odd{rank}")
    # preempted after 2 steps (rank 0 writes last.pt), then resumed by both ranks from it
    assert run_cell(cell, run_dir, stop_after_steps=2)["status"] == "interrupted"
    tracker = Recorder()
    result = run_cell(cell, run_dir, tracker=tracker)
    torch.save({"result": result, "logged": len(tracker.rows)}, out_dir / f"rank{rank}.pt")


# ------------------------------------------------------------------------------------------------
# What a multi-process run promises against a 1-process run with the same global batch.
#
# The ranks stay bitwise in sync with each other (every rank applies the same all-reduced gradient),
# but not with a 1-process run: gloo/NCCL sum the gradients in another order than one backward over
# the whole batch, so weights agree to float32 rounding (~1e-5 after a few steps), score matrices to a
# small delta, and a query whose ground truth is within 2*delta of a competitor may move one place.
# So the check is: weights within a float32 tolerance, scores within SCORE_TOL, and every query's
# rank inside the window that the observed score difference allows (bench.metrics.rank_bounds), hence
# every metric between the metrics of those windows' ends. That holds on any machine; the dev curve's
# epochs with a checkpoint (the best and the last) are checked the same way on the dev split.

WEIGHT_ATOL, WEIGHT_RTOL = 5e-5, 1e-4
SCORE_TOL = 1e-3  # far above float32 reduction noise after a few steps, far below a real difference


def _scores(cell, weights, split):
    """The score matrix of ``weights`` (the reported branch) on ``split`` ("dev" or a test split)."""
    import models
    from bench.evaluate import encode_all, score_matrix
    from bench.spec import resolve
    from bench.train import build_matcher, open_data

    cell = resolve(cell)
    data = open_data(cell, models.input_kind(cell.matcher.name))
    model = build_matcher(cell, data)
    model.load_state_dict(weights)
    model.eval()
    if split == "dev":
        n = min(cell.eval.dev_images, data.dev.n_images)
        imgs, caps = data.eval_batches(data.dev, cell.eval.batch_size, n_images=n)
    else:
        imgs, caps = data.eval_batches(data.test_splits[split], cell.eval.batch_size)
    with torch.no_grad():
        img, cap = encode_all(model, imgs, caps)
        return score_matrix(model, img, cap).float()


def _assert_equal_up_to_near_ties(S_ref, S_got, got_metrics, got_ranks=None, what=""):
    """``got_*`` (from the run whose scores are ``S_got``) are what ``S_ref`` gives up to near-tie flips."""
    from bench.metrics import RECALL_KEYS, _metrics_from_ranks, rank_bounds

    delta = float((S_ref - S_got).abs().max())
    assert delta <= SCORE_TOL, f"{what}: scores differ by {delta:.2e} (> {SCORE_TOL}): not float rounding"
    (lo_i2t, lo_t2i), (hi_i2t, hi_t2i) = rank_bounds(S_ref, delta)
    if got_ranks is not None:
        for name, got, lo, hi in (("i2t", got_ranks[0], lo_i2t, hi_i2t), ("t2i", got_ranks[1], lo_t2i, hi_t2i)):
            outside = np.flatnonzero((got < lo) | (got > hi))
            assert outside.size == 0, f"{what} {name}: queries {outside[:10]} ranked outside their window"
    best, worst = _metrics_from_ranks(lo_i2t, lo_t2i), _metrics_from_ranks(hi_i2t, hi_t2i)
    for key in (*RECALL_KEYS, "rsum"):
        assert worst[key] - 1e-9 <= got_metrics[key] <= best[key] + 1e-9, (what, key, got_metrics[key], worst, best)
    for key in ("i2t_meanr", "t2i_meanr", "i2t_medr", "t2i_medr"):
        assert best[key] - 1e-9 <= got_metrics[key] <= worst[key] + 1e-9, (what, key, got_metrics[key], best, worst)
    # the window is narrow: a real difference between the runs (not rounding) would not fit in it
    assert (hi_t2i - lo_t2i).mean() < 0.5 and (hi_i2t - lo_i2t).mean() < 0.5, what


def assert_distributed_matches_single(cell, single_dir, single, dist_dir, dist, protocol="f30k_1k"):
    """The promise above, for the run folders of a 1-process and a multi-process run of ``cell``."""
    a, b = ckpt.load(single_dir / "last.pt")["branches"], ckpt.load(dist_dir / "last.pt")["branches"]
    assert a.keys() == b.keys()
    for branch in a:
        for k in a[branch]:
            torch.testing.assert_close(b[branch][k], a[branch][k], atol=WEIGHT_ATOL, rtol=WEIGHT_RTOL,
                                       msg=f"{branch}.{k}")
    reported = single["reported_branch"]
    assert dist["reported_branch"] == reported
    assert len(dist["dev_curve"]) == len(single["dev_curve"])
    # the test split, from each run's best checkpoint, against the saved per-query ranks
    best_a = ckpt.load(single_dir / "best.pt")
    best_b = ckpt.load(dist_dir / "best.pt")
    S_a, S_b = _scores(cell, best_a["weights"], "test"), _scores(cell, best_b["weights"], "test")
    ranks = np.load(dist_dir / "ranks.npz")
    _assert_equal_up_to_near_ties(S_a, S_b, dist["metrics"][protocol],
                                  (ranks[f"{protocol}/i2t"], ranks[f"{protocol}/t2i"]), what="test")
    # the dev curve at the epochs whose weights were kept: the last (last.pt) and each run's best
    last = len(single["dev_curve"]) - 1
    S_a, S_b = _scores(cell, a[reported], "dev"), _scores(cell, b[reported], "dev")
    _assert_equal_up_to_near_ties(S_a, S_b, dist["dev_curve"][last], what=f"dev epoch {last}")
    if best_b["epoch"] == best_a["epoch"] != last:
        S_a, S_b = _scores(cell, best_a["weights"], "dev"), _scores(cell, best_b["weights"], "dev")
        _assert_equal_up_to_near_ties(S_a, S_b, dist["dev_curve"][best_a["epoch"]], what="dev best epoch")
    elif best_b["epoch"] != best_a["epoch"]:  # only a near-tie of dev RSUM between epochs may flip the choice
        ea, eb = best_a["epoch"], best_b["epoch"]
        gap = abs(single["dev_curve"][ea]["rsum"] - single["dev_curve"][eb]["rsum"])
        assert gap < 10, f"best epoch {eb} (distributed) vs {ea} (1 process) although dev RSUM differs by {gap}"


@pytest.mark.slow
@pytest.mark.parametrize("strategy,params", [("momentum", {"loss": "dino", "m0": 0.9})])
def test_two_ranks_preempted_and_resumed_reproduce_the_one_process_run(tiny_data, tmp_path, strategy, params):
    cell = _cell(tiny_data, strategy=strategy, params=params)
    single = run_cell(cell, tmp_path / "single")
    _spawn(_run_rank, cell, tmp_path / "dist", tmp_path)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD))
    assert r0["result"]["status"] == r1["result"]["status"] == "done"
    assert r0["logged"] > 0 and r1["logged"] == 0  # only rank 0 logs
    # the ranks stayed in sync: the same dev curve, best epoch and test metrics on both
    for key in ("dev_curve", "best_epoch", "metrics"):
        assert r0["result"][key] == r1["result"][key], key
    assert_distributed_matches_single(cell, tmp_path / "single", single, tmp_path / "dist", r0["result"])


@pytest.mark.slow
@pytest.mark.slurm
def test_a_two_task_slurm_job_trains_one_cell_across_its_tasks(slurm_cluster, tiny_data, tmp_path):
    """submitit tasks_per_node=2: both tasks join one gloo group from the SLURM job environment."""
    from bench.harness import jobs
    from bench.harness.slurm import Resources, load_profile, make_executor
    from bench.spec import cell_id

    profile = {**load_profile(slurm_cluster["profile"]), "tasks_per_node": 2, "max_mem_gb": None}
    cell = _cell(tiny_data).replace(suite="distributed")
    cell = cell.replace(id=cell_id(cell))
    need = Resources(cpus=1, mem_gb=4, time_min=10)
    job = make_executor("slurm", tmp_path / "jobs", profile, resources=need).submit(jobs.CellJob(cell, tmp_path / "results"))
    per_task = job.results()  # one result per task (rank)
    assert len(per_task) == 2 and all(r["state"] == "done" for r in per_task)
    got = per_task[0]["result"]
    assert got["dev_curve"] == per_task[1]["result"]["dev_curve"]
    assert [r.get("rank", 0) for r in per_task] == [0, 1]  # rank 1 trained alongside, rank 0 alone wrote the store
    log = (tmp_path / "results" / "distributed" / cell.id / "log.txt").read_text()
    assert "rank 0 of 2 (gloo" in log and "rank 1 of 2" not in log, log
    assert (tmp_path / "results" / "distributed" / cell.id / "done").exists()
    single = run_cell(_cell(tiny_data), tmp_path / "single")
    assert_distributed_matches_single(_cell(tiny_data), tmp_path / "single", single,
                                      tmp_path / "results" / "distributed" / cell.id, got)
