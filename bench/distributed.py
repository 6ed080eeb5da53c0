"""Data-parallel training of one cell across processes (ranks), DistributedDataParallel-style.

Each rank holds a full copy of every branch and trains on its contiguous slice of every global batch
(``bench.train`` does the slicing). The score matrix and the losses are those of the GLOBAL batch:

    img = gather_encoding(model.encode_images(local))     # [B, ...], with gradient, rank order
    cap = gather_encoding(model.encode_captions(local))
    S   = model.score(img, cap)                           # the full B×B matrix, identical on all ranks

so contrastive losses see every rank's negatives (open_clip's gather-with-grad). Every rank computes the
same global loss L; the backward of the gather sums the gradient of the gathered items over ranks, so rank
r's parameter gradient is ``world · Σ_{i ∈ r} ∂L/∂e_i · ∂e_i/∂θ`` (plus, for parameters used after the
gather such as CLIP's logit scale or a pairwise similarity network, the full ``∂L/∂θ``).
:func:`average_gradients` (all-reduce sum / world) then gives every rank exactly the 1-process gradient
``Σ_i ∂L/∂e_i · ∂e_i/∂θ``, so clipping and the optimiser step are those of a 1-process run.

Not identical to one process (documented limits):
* BatchNorm in training mode (VSE∞'s region MLP, SGRAF's pooling/filtration) normalises with the
  statistics of the LOCAL slice only (no SyncBatchNorm), and its running statistics are rank 0's.
* Dropout draws the same random stream on every rank, on different items.
* Region matchers trim/pad to the longest item of the local slice; padding is masked, so the
  difference is float rounding (except through BatchNorm, above).

The process group comes from the standard environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT``, ``LOCAL_RANK``); inside a SLURM job with several tasks (submitit
``tasks_per_node`` > 1) that environment is exported from submitit's job environment first.
"""

from __future__ import annotations

import contextlib
import logging
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F

from models.base import Encoding

log = logging.getLogger("bench.distributed")


def torch_device(name: str, what: str = "device") -> torch.device:
    """The torch device ``name`` names (``auto``: CUDA when there is one); a ValueError naming ``what`` (the key
    or option that gave it) and the fix for a name that is no device here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"{what} {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{what} {name}: torch finds no CUDA device here (torch.cuda.is_available() is "
                         f"False); use {what} cpu (or auto)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"{what} {name}: there are {torch.cuda.device_count()} CUDA device(s) (cuda:0 …); "
                         "pick one of them")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"{what} {name}: the suite runs on cpu or cuda; use auto, cpu, cuda or cuda:N")
    return dev


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """True on rank 0 (and in a non-distributed run): the only rank that writes files and logs."""
    return rank() == 0


def init_from_env(device_type: str = "cpu") -> tuple[int, int]:
    """Join the process group described by the environment; return (rank, world_size).

    Returns (0, 1) without creating a group when the environment asks for one process. Backend:
    ``nccl`` for ``device_type == "cuda"``, else ``gloo``. Idempotent: an existing group is reused.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    # Tasks of the current srun step (submitit starts every task with srun); SLURM_NTASKS alone would also
    # match a one-process shell inside a multi-task allocation, which would then wait for absent ranks.
    slurm_tasks = int(os.environ.get("SLURM_NTASKS", "1"))
    if "RANK" not in os.environ and slurm_tasks > 1 and int(os.environ.get("SLURM_STEP_NUM_TASKS", "1")) > 1:
        import submitit

        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(f"bench.distributed: WORLD_SIZE={world} but {missing} unset; export RANK, MASTER_ADDR "
                           "and MASTER_PORT for every process (torchrun/submitit do), or unset WORLD_SIZE")
    if not dist.is_available():
        raise RuntimeError("bench.distributed: this torch build has no torch.distributed; unset WORLD_SIZE")
    backend = "nccl" if device_type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    dist.init_process_group(backend, init_method="env://")
    log.info("joined the process group as rank %d of %d (%s, master %s:%s)", dist.get_rank(),
             dist.get_world_size(), backend, os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"])
    return dist.get_rank(), dist.get_world_size()


@contextlib.contextmanager
def main_first():
    """Rank 0 runs the body first (e.g. repairs/reads a checkpoint), then the other ranks run it."""
    if world_size() > 1 and not is_main():
        dist.barrier()
    yield
    if world_size() > 1 and is_main():
        dist.barrier()


class _GatherWithGrad(torch.autograd.Function):
    """y = cat_r x_r (rank order); ∂L/∂x_r = Σ_ranks (∂L/∂y)[slice r] (every rank's loss depends on x_r)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        ctx.n = x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = dist.get_rank() * ctx.n
        return grad[start:start + ctx.n]


def _gather_tensor(t: torch.Tensor) -> torch.Tensor:
    n = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, n)
    if len({int(s) for s in sizes}) > 1:
        raise ValueError(f"bench.distributed.gather_encoding: ranks hold different numbers of items "
                         f"{[int(s) for s in sizes]}; every rank must encode an equal slice of the batch")
    if t.dim() >= 2:  # pad dimension 1 (e.g. caption length) to the widest rank, as cat_encodings does
        width = torch.tensor([t.shape[1]], device=t.device)
        dist.all_reduce(width, op=dist.ReduceOp.MAX)
        if int(width) > t.shape[1]:
            t = F.pad(t, [0, 0] * (t.dim() - 2) + [0, int(width) - t.shape[1]])
    if t.requires_grad:
        return _GatherWithGrad.apply(t)
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=0)


def gather_encoding(enc: Encoding) -> Encoding:
    """Every rank's encoding concatenated in rank order (gradient flows back to the local items);
    dimension 1 is zero-padded to the widest rank first. Identity when not distributed."""
    if world_size() == 1:
        return enc
    if isinstance(enc, tuple):
        return tuple(_gather_tensor(t) for t in enc)
    return _gather_tensor(enc)


def global_scores(model, batch: dict) -> torch.Tensor:
    """The B×B score matrix of the GLOBAL batch from this rank's slice ``batch`` (see module docstring);
    ``model(batch)`` when not distributed."""
    if world_size() == 1:
        return model(batch)
    batch = model.prepare(batch)
    return model.score(gather_encoding(model.encode_images(batch)), gather_encoding(model.encode_captions(batch)))


def average_gradients(module: torch.nn.Module) -> None:
    """g ← (Σ_ranks g) / world for every parameter gradient, in one flat all-reduce. A gradient missing
    on some ranks counts as zero there; one missing on every rank stays None (as in one process)."""
    world = world_size()
    if world == 1:
        return
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        return
    device = params[0].device
    has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
    dist.all_reduce(has_grad, op=dist.ReduceOp.MAX)
    params = [p for p, h in zip(params, has_grad.tolist()) if h]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1).float() for p in params])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat.div_(world)
    offset = 0
    for p in params:
        n = p.grad.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank (identity when not distributed)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()
