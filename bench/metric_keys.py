"""The metric names, one home (docs/evaluation.md): read by every table, W&B summary and report, and by
:mod:`bench.metrics` (which computes them). A module of its own, without torch: the command line names
metrics before any score is computed."""

from __future__ import annotations

RECALL_KS = (1, 5, 10)
METRIC_KEYS = (
    "i2t_r1", "i2t_r5", "i2t_r10", "i2t_medr", "i2t_meanr",
    "t2i_r1", "t2i_r5", "t2i_r10", "t2i_medr", "t2i_meanr",
    "rsum",
)  # fmt: skip
RECALL_KEYS = tuple(f"{d}_r{k}" for d in ("i2t", "t2i") for k in RECALL_KS)
RANK_KEYS = tuple(f"{d}_{r}" for d in ("i2t", "t2i") for r in ("medr", "meanr"))
#: The metrics in the order tables and reports list them: recalls, RSUM, then the ranks (the one home of the
#: metric names: every table, W&B summary and ``python -m bench evaluate`` reads them here).
REPORT_KEYS = (*RECALL_KEYS, "rsum", *RANK_KEYS)
#: COCO 5K's ECCV Caption and CxC metrics (percent; :mod:`bench.eccv` computes them beside Recall@K), in the
#: order their table block lists them, and the key of how many test images they were computed on.
ECCV_KEYS = (
    "eccv_map_at_r_i2t", "eccv_map_at_r_t2i", "eccv_rprecision_i2t", "eccv_rprecision_t2i",
    "eccv_r1_i2t", "eccv_r1_t2i",
    "cxc_r1_i2t", "cxc_r5_i2t", "cxc_r10_i2t", "cxc_r1_t2i", "cxc_r5_t2i", "cxc_r10_t2i",
)  # fmt: skip
ECCV_SIZE_KEY = "eccv_images"
#: Every metric a result may hold for one protocol, in the per-cell CSV's order: ``REPORT_KEYS`` (their order
#: unchanged), then COCO 5K's ECCV Caption / CxC and their image count (absent elsewhere and from older results).
RESULT_KEYS = (*REPORT_KEYS, *ECCV_KEYS, ECCV_SIZE_KEY)
