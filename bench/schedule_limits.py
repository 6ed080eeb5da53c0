"""The values each numeric schedule key may take: one table, read by the suite schema
(``bench.harness.config``: a suite is refused at load, before any cell) and by the trainer's ``resolve``
(a cell given to the trainer directly). Checking never changes a value, so cell ids stay the same.

A module of its own (no torch, no pydantic), so that both read it cheaply; every key is a key of
``bench.spec.SCHEDULE_DEFAULTS`` (tests/test_bad_inputs_commands.py checks it).
"""

from __future__ import annotations

#: The values each numeric schedule key may take (one home: the suite schema and ``resolve`` both read it):
#: ``(lowest, lowest allowed?, highest or None, why)``; a list key's items are checked one by one.
SCHEDULE_LIMITS: dict[str, tuple[float, bool, float | None, str]] = {
    "epochs": (1, True, None, "a count of 0 or less trains nothing"),
    "batch_size": (1, True, None, "a count of 0 or less trains nothing"),
    "max_steps_per_epoch": (1, True, None, "a count of 0 or less trains nothing (null: no limit)"),
    "lr": (0, False, None, "an lr of 0 learns nothing and one below 0 climbs the loss"),
    "lr_decay": (0, False, 1, "the lr is multiplied by it at each of lr_decay_epochs: 1 keeps it, 0 or less "
                              "stops or reverses learning, above 1 grows it"),
    "lr_decay_epochs": (0, True, None, "epoch numbers (0-based) at which the lr decays"),
    "weight_decay": (0, True, None, "a weight decay below 0 pushes the weights to grow"),
    "grad_clip": (0, True, None, "the largest gradient norm (0 turns clipping off); below 0 it flips the "
                                 "gradient into an ascent"),
    "margin": (0, True, None, "the hinge margin; below 0 the loss is satisfied by ranking a negative first"),
    "hinge_warmup_epochs": (0, True, None, "a count of epochs"),
    "workers": (0, True, None, "a count of data-loader processes (0: in the training process)"),
    "checkpoint_every": (0, True, None, "a count of steps (0: at epoch ends only)"),
    "log_every": (1, True, None, "log every N steps: 0 would divide by zero at the first step"),
}


def schedule_limit_problem(key: str, value) -> str | None:
    """What is wrong with ``value`` for schedule ``key`` under ``SCHEDULE_LIMITS`` (None: nothing)."""
    if key not in SCHEDULE_LIMITS or value is None or isinstance(value, bool):
        return None
    lo, lo_ok, hi, why = SCHEDULE_LIMITS[key]
    for v in value if isinstance(value, list) else [value]:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue  # a type error: the schema (or the trainer) reports it
        if v < lo or (v == lo and not lo_ok) or (hi is not None and v > hi):
            rng = f"{'>=' if lo_ok else '>'} {lo}" + (f" and <= {hi}" if hi is not None else "")
            item = f" (item {v!r})" if isinstance(value, list) else ""
            return f"must be {rng}, got {value!r}{item}: {why}"
    return None
