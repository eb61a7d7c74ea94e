"""Codec speed and size, side by side: encode/decode MB/s (of raw tensor bytes), ratio, error.

Tensors: synthetic stand-ins shaped like NanoDet crossing tensors (ReLU'd and dense Gaussians, a
multi-branch head output), plus real NanoDet activations on a bundled photo when the bundled
model is present. NNC decode is timed both through the helper processes (what the server does with
untrusted payloads) and in-process (`trusted=True`).

    .venv/bin/python bench/bench_codecs.py [--codecs none,float16,zstd:1,zstd,nnc:-38,nnc:-20] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np


def synthetic() -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [
        ("relu 1x64x52x52", np.maximum(rng.standard_normal((1, 64, 52, 52)), 0).astype(np.float32)),
        ("dense 1x96x26x26", rng.standard_normal((1, 96, 26, 26)).astype(np.float32)),
        ("relu 1x128x13x13", np.maximum(rng.standard_normal((1, 128, 13, 13)) * 3, 0).astype(np.float32)),
        ("scores 1x2704x80", (1 / (1 + np.exp(-rng.standard_normal((1, 2704, 80)) * 3 + 4))).astype(np.float32)),
    ]


def nanodet_activations(limit: int = 3) -> list[tuple[str, np.ndarray]]:
    """A few real intermediate tensors of the bundled NanoDet on a bundled photo (empty if no model)."""
    try:
        import cv2
        import onnx
        import onnxruntime as ort

        from splitinfer.common.assets import bundled_images, default_model_path
        from splitinfer.common.families import get_family
    except Exception as exc:  # the bench still runs on synthetic tensors
        print(f"(no real activations: {exc})", file=sys.stderr)
        return []
    path = default_model_path()
    if not path.exists():
        print(f"(no real activations: {path} is missing)", file=sys.stderr)
        return []
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    infos = {v.name: v for v in model.graph.value_info}
    picks = []
    nodes = list(model.graph.node)
    for frac in np.linspace(0.15, 0.75, limit):
        for node in nodes[int(frac * len(nodes)):]:
            v = infos.get(node.output[0]) if node.output else None
            if v is not None and v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT \
                    and len(v.type.tensor_type.shape.dim) == 4:
                picks.append(v)
                break
    model.graph.output.extend(picks)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    image = cv2.imread(str(next(p for p in bundled_images() if p.name == "dog.jpg")))
    feeds, _ = get_family("nanodet").preprocess(image)
    outs = sess.run([v.name for v in picks], feeds)
    return [(f"nanodet {v.name.split('/')[-1][-12:]} {'x'.join(map(str, a.shape))}", a) for v, a in zip(picks, outs)]


def timed(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codecs", default="none,float16,zstd:1,zstd,nnc:-38,nnc:-20")
    ap.add_argument("--repeat", type=int, default=5, help="runs per measurement for fast codecs (median)")
    ap.add_argument("--nnc-repeat", type=int, default=2)
    ap.add_argument("--no-model", action="store_true", help="synthetic tensors only")
    args = ap.parse_args(argv)

    from tqdm import tqdm

    from splitinfer.common.codecs import get_codec

    codecs = [get_codec(s) for s in args.codecs.split(",")]
    for c in codecs:
        c.warm_up()
    tensors = synthetic() + ([] if args.no_model else nanodet_activations())
    rows = []
    for (label, x), c in tqdm([(t, c) for t in tensors for c in codecs], desc="codecs", unit="run", file=sys.stderr):
        r = args.nnc_repeat if c.name == "nnc" else args.repeat
        mb = x.nbytes / 1e6
        t_enc, payload = timed(lambda: c.encode(x), r)
        t_dec, y = timed(lambda: c.decode(payload, x.dtype, x.shape), r)
        t_trusted = timed(lambda: c.decode(payload, x.dtype, x.shape, trusted=True), r)[0] if c.name == "nnc" else None
        err = float(np.linalg.norm(y.astype(np.float64) - x) / max(np.linalg.norm(x.astype(np.float64)), 1e-30))
        rows.append((label, c.spec, mb, len(payload), x.nbytes / len(payload), mb / t_enc, mb / t_dec,
                     mb / t_trusted if t_trusted else None, err))

    head = f"{'tensor':<34} {'codec':<9} {'raw MB':>7} {'bytes':>9} {'ratio':>6} {'enc MB/s':>9} " \
           f"{'dec MB/s':>9} {'dec in-proc':>11} {'rel err':>8}"
    print(head)
    print("-" * len(head))
    last = None
    for label, spec, mb, size, ratio, enc, dec, dec_t, err in rows:
        if last is not None and label != last:
            print()
        last = label
        dec_t_s = f"{dec_t:11.1f}" if dec_t else f"{'':>11}"
        print(f"{label:<34} {spec:<9} {mb:7.3f} {size:9d} {ratio:6.2f} {enc:9.1f} {dec:9.1f} {dec_t_s} {err:8.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
