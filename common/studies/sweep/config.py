"""What a sweep is asked (`SweepConfig`) and what it answers (`SweepRow`, `SweepResult`, results.json).

Defined terms: a *row* is one (split rank, codec spec) with per-image means over the data; *relative
mAP* scores a row's detections against the whole model's own detections (the *anchor*).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from splitinfer.common.core.errors import UserError
from splitinfer.common.eval.evaluation import DEFAULT_ANCHOR_THRESHOLD  # noqa: F401 (re-exported)


FORMAT = 2  # 2: rows store element counts and fidelity sums per image
DEFAULT_CODECS = ("none", "float16", "nnc:-38", "nnc:-26", "nnc:-18", "nnc:-14", "nnc:-10", "nnc:-6", "nnc:-4",
                  "nnc:0")
DEFAULT_SCORE_THRESHOLD = 0.05  # COCO evaluation convention: keep low-score boxes for the PR curve
DEFAULT_BATCH = 16
DEFAULT_NUM_SPLITS = 6


@dataclass
class SweepConfig:
    """What to sweep. `splits`: ranks or node names (None = `DEFAULT_NUM_SPLITS` automatic ranks)."""

    model: str
    data: str
    splits: list | None = None
    codecs: list[str] = field(default_factory=lambda: list(DEFAULT_CODECS))
    family: str | None = None
    gt: str | None = None
    out_dir: str | None = None
    cache_dir: str | None = None
    workers: int | None = None  # None: os.cpu_count(); 0: in this process
    ray_address: str | None = None  # None: local process pool; 'local': start a local Ray instance
    batch_size: int = DEFAULT_BATCH
    max_images: int | None = None  # frames: at most this many, from `start` (0-based), consecutive
    start: int = 0
    score_threshold: float = DEFAULT_SCORE_THRESHOLD
    anchor_threshold: float = DEFAULT_ANCHOR_THRESHOLD
    resume: bool = True


@dataclass
class SweepRow:
    """One (split, codec): sizes are per image (mean), times are ms per image (mean), AP in [0,1]."""

    rank: int
    node: str
    op_type: str
    branches: int
    codec: str
    codec_id: int
    images: int
    raw_bytes: float
    encoded_bytes: float
    ratio: float
    encode_ms: float
    decode_ms: float
    part2_ms: float
    max_abs_err: float
    map: float = math.nan
    map50: float = math.nan
    map75: float = math.nan
    gt_images: int = 0
    rel_map: float = math.nan
    rel_map50: float = math.nan
    rel_map75: float = math.nan
    predictions: int = 0
    cached: bool = False
    elements: float = math.nan  # tensor elements Part I sends per image
    bits_per_element: float = math.nan  # 8 x encoded bytes / elements
    encode_mbps: float = math.nan  # raw MB encoded per second (MB = 1e6 bytes)
    decode_mbps: float = math.nan
    nmse: float = math.nan  # fidelity of the model outputs against the whole model's (see fidelity.py)
    psnr_db: float = math.nan
    cosine: float = math.nan
    top1: float = math.nan
    top5: float = math.nan
    keyframes: int = 0  # frames coded as keyframes (every frame of a per-frame codec; see codecs/sequence.py)
    key_bytes: float = math.nan  # mean encoded bytes of a keyframe / of a predicted frame (NaN: none)
    predicted_bytes: float = math.nan
    frame_bytes: list = field(default_factory=list)  # encoded bytes of each frame, in frame (name) order
    key_indices: list = field(default_factory=list)  # a sequential row's keyframes (indices in frame_bytes)

    @property
    def label(self) -> str:
        return f"r{self.rank} {self.codec}"


@dataclass
class SweepResult:
    model: str  # as given (bundled id or path)
    model_path: str
    model_sha256: str
    family: str
    num_nodes: int
    data: str
    data_fingerprint: str
    images: list[str]
    gt: str | None
    score_threshold: float
    anchor_threshold: float
    splits: list[dict]
    codecs: list[str]
    rows: list[SweepRow]
    anchor: dict
    stats: dict
    runner: str

    def to_dict(self) -> dict:
        d = asdict(self)
        d["format"] = FORMAT
        d["rows"] = [{k: _json_num(v) for k, v in asdict(r).items()} for r in self.rows]
        d["anchor"] = {k: _json_num(v) for k, v in self.anchor.items()}
        return d


FLOAT_FIELDS = ("map", "map50", "map75", "rel_map", "rel_map50", "rel_map75", "max_abs_err", "elements",
                "bits_per_element", "encode_mbps", "decode_mbps", "nmse", "psnr_db", "cosine", "top1", "top5",
                "key_bytes", "predicted_bytes")


def _json_num(v):
    """NaN -> null; infinities (PSNR of a lossless row) -> "inf" / "-inf", read back by `_num`."""
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def _num(v) -> float:
    return math.nan if v is None or v == "" else float(v)


def load_results(path) -> dict:
    """A sweep's results.json (or the folder holding it) as a dict with `rows` as `SweepRow`s."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise UserError(f"sweep results not found: {path} (run `splitinfer sweep` first; it writes results.json)")
    try:
        data = json.loads(path.read_text())
        rows = []
        for r in data["rows"]:
            kw = {k: r[k] for k in SweepRow.__dataclass_fields__ if k in r}
            for k in FLOAT_FIELDS:
                kw[k] = _num(kw.get(k))
            rows.append(SweepRow(**kw))
        data["rows"] = rows
        if "model_sha256" not in data or "num_nodes" not in data:
            raise KeyError("model_sha256")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path}: not a sweep results file ({type(exc).__name__}: {exc})") from None
    return data
