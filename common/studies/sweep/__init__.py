"""Split-point x codec sweep: bytes, codec times and mAP for every (split, codec), fast and resumable.

Why it is fast: the naive way splits the model and runs Part I and Part II from the image for every
(split, codec). Here each image goes through the whole model ONCE, with every crossing tensor of every
requested split (and Part I's final outputs) exposed as extra graph outputs; those activations are
cached as .npz files (never pickled). Per (split, codec) only encode, decode and Part II remain, run
as independent tasks (one image batch, one split, one codec) on a local process pool or a Ray cluster.

Why activations are cached on disk rather than recomputed: they are the hand-off to the worker
processes (a file read from the page cache costs far less than a model run, and no pickled arrays
cross process boundaries), and a resumed sweep skips the model run entirely.

Resume: each finished (split, codec) row is written atomically as one JSON file under
`<cache>/rows/<key>/`, where the key hashes the model's sha256, the data fingerprint (sha256 of every
image file), the family and the post-processing score threshold. A row file holds per-image bytes,
times and detections, not mAP: mAP (absolute against `--gt`, relative against the whole-model anchor)
is recomputed from the stored detections at the end of every run, so changing the ground truth or the
anchor threshold never invalidates finished rows. Rows whose batches were only partly done when the
sweep stopped are recomputed, and so are rows of a codec whose source files changed since (each row
stores its codec's source fingerprint).

Timings: encode/decode/Part II times are measured inside the workers, with one onnxruntime thread per
pool or Ray worker (per-core figures) and onnxruntime's default threads when tasks run in this process
(`workers=0`); on a shared machine they include contention.

One module per idea: `config` (what is asked and answered), `splits` (ranks, codecs), `data` (frames,
fingerprint), `cache` (activations, row files), `tasks` (one batch x split x codec), `runners` (in
process, pool, Ray), `evaluate` (rows and mAP), `fidelity` (NMSE, PSNR, cosine, top-k of the model
outputs against the whole model's), `model_source` (which model: an id, folder, file or
`zoo:NAME`, with the `raw` family of families/raw.py where none is known), `report` (CSV, JSON, plots, Markdown/HTML), `run` (`run_sweep`, step by step).
"""

from splitinfer.common.studies.sweep.cache import compute_activations
from splitinfer.common.studies.sweep.config import (DEFAULT_ANCHOR_THRESHOLD, DEFAULT_BATCH, DEFAULT_CODECS,
                                                    DEFAULT_NUM_SPLITS, DEFAULT_SCORE_THRESHOLD, FORMAT,
                                                    SweepConfig, SweepResult, SweepRow, load_results)
from splitinfer.common.studies.sweep.data import data_items, fingerprint, read_frames
from splitinfer.common.studies.sweep.evaluate import anchor_metrics, evaluate_rows
from splitinfer.common.studies.sweep.report import (CSV_COLUMNS, PLOTS, plot_map_by_split, plot_map_vs_ratio,
                                                    plot_map_vs_size, print_table, summary_lines, write_csv,
                                                    write_outputs, write_report)
from splitinfer.common.studies.sweep.run import run_sweep
from splitinfer.common.studies.sweep.splits import auto_splits, resolve_splits, sent_names
from splitinfer.common.studies.sweep.tasks import run_task

__all__ = [
    "CSV_COLUMNS", "DEFAULT_ANCHOR_THRESHOLD", "DEFAULT_BATCH", "DEFAULT_CODECS", "DEFAULT_NUM_SPLITS",
    "DEFAULT_SCORE_THRESHOLD", "FORMAT", "PLOTS", "SweepConfig", "SweepResult", "SweepRow", "anchor_metrics",
    "auto_splits", "compute_activations", "data_items", "evaluate_rows", "fingerprint", "load_results",
    "plot_map_by_split", "plot_map_vs_ratio", "plot_map_vs_size", "print_table", "read_frames", "resolve_splits",
    "run_sweep", "run_task", "sent_names", "summary_lines", "write_csv", "write_outputs", "write_report",
]
