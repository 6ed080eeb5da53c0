"""Numeric precision and compilation of a matcher: the recipe choices ``precision`` and ``compile``.

    mode = RunMode.of(schedule, device)          # what a cell runs with on this device
    model = prepare_model(model, mode)           # compiles the pairwise scoring when asked
    with mode.autocast():                        # bf16 autocast / TF32 matmuls when asked
        loss = ...

``precision``:

* ``fp32`` (default; the reference programs train in fp32): float32 everywhere, TF32 matmuls off.
* ``tf32``: float32 tensors, matmuls on the TF32 tensor cores (CUDA, Ampere and later). On a CPU there
  is no TF32 unit: it runs exactly as fp32 (``RunMode.effective`` says ``fp32``, and the result records both).
* ``bf16``: bf16 autocast for the forward passes (losses and score reductions stay float32). It works on
  CPU too (torch's CPU autocast), so a CPU cell with ``precision: bf16`` is a real bf16 run.

``compile: true`` compiles each pairwise matcher's tile scoring (``torch.compile``, static tile shapes:
tiles are padded to one shape, so one compilation serves every tile) and, for a dual encoder, nothing
(its score is one matmul). On CPU it costs tens of seconds in every fresh cell process and gains little
in training and nothing in scoring (``make bench``'s "Precision and compilation on CPU" in results/perf.md
measures each mode beside fp32 eager): it is opt-in everywhere.

The legacy schedule key ``amp: true`` means ``precision: bf16`` on CUDA (as before, ignored on CPU); a
cell with ``amp: true`` and another non-default precision is refused.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

PRECISIONS = ("fp32", "tf32", "bf16")
#: Every mode ``make bench-gpu`` measures, by name (``RunMode.name``).
MODE_NAMES = ("fp32", "tf32", "bf16", "fp32+compile", "bf16+compile")


def check(precision, compile_) -> None:
    """Raise ValueError naming the key, the value and the valid choices."""
    if precision not in PRECISIONS:
        raise ValueError(f"schedule.precision={precision!r} is not one of {list(PRECISIONS)}: use one of them")
    if not isinstance(compile_, bool):
        raise ValueError(f"schedule.compile={compile_!r} must be true or false")


@dataclass(frozen=True)
class RunMode:
    """What a run uses: the requested ``precision`` and ``compile``, and the device they apply to."""

    precision: str = "fp32"
    compile: bool = False
    device_type: str = "cpu"

    def __post_init__(self):
        check(self.precision, self.compile)

    @classmethod
    def of(cls, sched: dict, device) -> RunMode:
        """The mode of a resolved schedule on ``device`` (a torch device or its name; the legacy ``amp`` key folded
        in). A device named by a plain string is read without importing torch (the resolver checks modes on "cpu")."""
        if isinstance(device, str) and device.split(":")[0] in ("cpu", "cuda", "meta", "mps"):
            device_type = device.split(":")[0]
        else:
            import torch

            device_type = torch.device(device).type
        precision = sched.get("precision", "fp32")
        if sched.get("amp"):
            if precision not in ("fp32", "bf16"):
                raise ValueError(f"schedule.amp=true (bf16 autocast, legacy) contradicts schedule.precision="
                                 f"{precision!r}: drop amp and keep precision")
            if device_type == "cuda":  # as before: amp is a CUDA-only switch
                precision = "bf16"
        return cls(precision, sched.get("compile", False), device_type)

    @property
    def effective(self) -> str:
        """The precision that really runs: tf32 is fp32 off CUDA."""
        return "fp32" if self.precision == "tf32" and self.device_type != "cuda" else self.precision

    @property
    def name(self) -> str:
        return self.precision + ("+compile" if self.compile else "")

    def record(self) -> dict:
        """What a result records about the mode."""
        return {"precision": self.precision, "precision_effective": self.effective, "compile": self.compile,
                "device_type": self.device_type}

    @contextlib.contextmanager
    def autocast(self):
        """bf16 autocast for ``bf16``; TF32 matmuls for ``tf32`` on CUDA (restored after)."""
        import torch

        tf32 = self.effective == "tf32"
        before = torch.get_float32_matmul_precision()
        if tf32:
            torch.set_float32_matmul_precision("high")  # TF32 tensor cores for float32 matmuls
        try:
            with torch.autocast(device_type=self.device_type, dtype=torch.bfloat16,
                                enabled=self.effective == "bf16"):
                yield
        finally:
            if tf32:
                torch.set_float32_matmul_precision(before)


def variant_label(precision: str | None, compile_: bool | None) -> str:
    """'' for the default (fp32, eager); else e.g. ' [bf16]', ' [tf32, compiled]' (a table row's suffix)."""
    parts = [p for p in ((precision if precision and precision != "fp32" else None),
                         ("compiled" if compile_ else None)) if p]
    return f" [{', '.join(parts)}]" if parts else ""


def prepare_model(model, mode: RunMode):
    """Compile the model's pairwise tile scoring when ``mode.compile`` (in place; returns the model)."""
    if mode.compile:
        set_compiled(model, True)
    return model


def set_compiled(model, on: bool = True) -> None:
    """Switch every pairwise matcher inside ``model`` to compiled tile scoring (or back to eager)."""
    for m in model.modules():
        if hasattr(m, "_score_tile") and hasattr(m, "tile_elems"):
            m.compiled_tiles = on
