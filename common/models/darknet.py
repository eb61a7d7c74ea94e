"""Darknet (.cfg + .weights) to ONNX with onnx.helper alone: the YOLO detectors users bring, no torch.

Why here: the converter writes a model folder (`model.onnx` + `model.json`) like the exporters beside it,
and needs only onnx and numpy. Layers read: `convolutional` (batch norm folded into the weights the way
darknet normalises, `(x - mean) / (sqrt(var) + 1e-6)`; activations leaky 0.1, linear, relu, logistic, mish,
swish), `maxpool` (darknet's padding: `padding` = size - 1, split begin = padding // 2, so size 2 stride 1
keeps the size), `route` (concatenation, `groups`/`group_id` slices), `upsample` (nearest), `shortcut`
(sum), `yolo` (a graph output: the raw per-scale tensor [1, A*(5+C), H, W] the `yolo` family decodes).
Defined terms: *section* (one `[name]` block of the cfg; its index counts from 0 after `[net]`, as darknet's
`layers=` references do), *weights file* (header major, minor, revision, images seen, then float32 values in
the order darknet reads them: per convolution biases, [scales, means, variances,] kernels).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from splitinfer.common.core.errors import UserError

OPSET = 13
INPUT = "input"
BN_EPS = 1e-6  # darknet adds it to sqrt(variance), not to the variance
ACTIVATIONS = ("leaky", "linear", "relu", "logistic", "mish", "swish")
MAX_CFG_BYTES = 1 << 20


def parse_cfg(path) -> list[dict]:
    """Sections of a darknet cfg as dicts with `type` and `line`; values are strings."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"darknet cfg not found: {path}")
    if path.stat().st_size > MAX_CFG_BYTES:
        raise UserError(f"{path}: {path.stat().st_size} bytes is not a darknet cfg (at most {MAX_CFG_BYTES})")
    sections: list[dict] = []
    for lineno, raw in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise UserError(f"{path}:{lineno}: section header without ']': {line!r}")
            sections.append({"type": line[1:-1].strip().lower(), "line": lineno})
        elif "=" in line and sections:
            key, value = line.split("=", 1)
            sections[-1][key.strip()] = value.strip()
        else:
            raise UserError(f"{path}:{lineno}: expected '[section]' or 'key=value', got {line!r}")
    if not sections or sections[0]["type"] not in ("net", "network"):
        raise UserError(f"{path}: a darknet cfg starts with [net]")
    return sections


def _int(sec: dict, key: str, default=None, where: str = "") -> int:
    if key not in sec:
        if default is None:
            raise UserError(f"{where}: [{sec['type']}] at line {sec['line']} needs {key}=")
        return default
    try:
        return int(sec[key])
    except ValueError:
        raise UserError(f"{where}:{sec['line']}: {key}={sec[key]!r} is not an integer") from None


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.replace(" ", "").split(",") if v]


class _Weights:
    """The float32 values of a weights file, taken in order; size checked against the cfg before reading."""

    def __init__(self, path: Path, expected: int):
        if not path.is_file():
            raise UserError(f"darknet weights not found: {path}")
        with path.open("rb") as fh:
            head = np.frombuffer(fh.read(12), dtype="<i4")
            if head.size != 3:
                raise UserError(f"{path}: too short for a darknet weights header")
            major, minor = int(head[0]), int(head[1])
            seen_bytes = 8 if major * 10 + minor >= 2 and major < 1000 and minor < 1000 else 4
            fh.read(seen_bytes)
            header = 12 + seen_bytes
            have = (path.stat().st_size - header) // 4
            if have != expected:
                raise UserError(f"{path}: holds {have} weights, the cfg needs {expected} (cfg and weights "
                                f"files do not belong together)")
            self.values = np.frombuffer(fh.read(expected * 4), dtype="<f4")
        self.pos = 0

    def take(self, n: int) -> np.ndarray:
        out = self.values[self.pos:self.pos + n]
        self.pos += n
        return out


class _Graph:
    """ONNX nodes and initializers under construction, one darknet section at a time."""

    def __init__(self):
        self.nodes, self.inits = [], []

    def const(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def activation(self, kind: str, x: str, tag: str) -> str:
        if kind == "linear":
            return x
        if kind == "leaky":
            return self.node("LeakyRelu", [x], f"leaky_{tag}", alpha=0.1)
        if kind == "relu":
            return self.node("Relu", [x], f"relu_{tag}")
        if kind == "logistic":
            return self.node("Sigmoid", [x], f"logistic_{tag}")
        if kind == "swish":
            return self.node("Mul", [x, self.node("Sigmoid", [x], f"swish_sigmoid_{tag}")], f"swish_{tag}")
        soft = self.node("Softplus", [x], f"mish_softplus_{tag}")  # mish; opset 13 has no Mish
        return self.node("Mul", [x, self.node("Tanh", [soft], f"mish_tanh_{tag}")], f"mish_{tag}")


def _conv_count(sec: dict, c: int, where: str) -> int:
    f, k = _int(sec, "filters", where=where), _int(sec, "size", 1, where)
    groups = _int(sec, "groups", 1, where)
    return f * (4 if _int(sec, "batch_normalize", 0, where) else 1) + f * (c // groups) * k * k


def _conv(g: _Graph, w: _Weights, sec: dict, i: int, x: str, c: int, h: int, wd: int, where: str):
    f, k = _int(sec, "filters", where=where), _int(sec, "size", 1, where)
    stride, groups = _int(sec, "stride", 1, where), _int(sec, "groups", 1, where)
    pad = k // 2 if _int(sec, "pad", 0, where) else _int(sec, "padding", 0, where)
    act = sec.get("activation", "logistic")
    if act not in ACTIVATIONS:
        raise UserError(f"{where}:{sec['line']}: activation {act!r} not supported ({', '.join(ACTIVATIONS)})")
    bias = w.take(f).astype(np.float64)
    kernel_count = f * (c // groups) * k * k
    if _int(sec, "batch_normalize", 0, where):
        scales, mean, var = (w.take(f).astype(np.float64) for _ in range(3))
        factor = scales / (np.sqrt(var) + BN_EPS)
        kernel = w.take(kernel_count).astype(np.float64).reshape(f, c // groups, k, k) * factor[:, None, None, None]
        bias = bias - mean * factor
    else:
        kernel = w.take(kernel_count).astype(np.float64).reshape(f, c // groups, k, k)
    y = g.node("Conv", [x, g.const(f"conv_{i}.weight", kernel.astype(np.float32)),
                        g.const(f"conv_{i}.bias", bias.astype(np.float32))], f"conv_{i}",
               kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4, group=groups)
    y = g.activation(act, y, str(i))
    return y, f, (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1


def _maxpool(g: _Graph, sec: dict, i: int, x: str, c: int, h: int, wd: int, where: str):
    stride = _int(sec, "stride", 1, where)
    size = _int(sec, "size", stride, where)
    padding = _int(sec, "padding", size - 1, where)
    b, e = padding // 2, padding - padding // 2
    y = g.node("MaxPool", [x], f"maxpool_{i}", kernel_shape=[size, size], strides=[stride, stride],
               pads=[b, b, e, e])
    return y, c, (h + padding - size) // stride + 1, (wd + padding - size) // stride + 1


def _route(g: _Graph, sec: dict, i: int, outs: list, where: str):
    refs = [r if r >= 0 else i + r for r in _ints(sec.get("layers", ""))]
    if not refs or any(not 0 <= r < i for r in refs):
        raise UserError(f"{where}:{sec['line']}: route layers={sec.get('layers')!r} must name earlier sections")
    groups, gid = _int(sec, "groups", 1, where), _int(sec, "group_id", 0, where)
    parts, c = [], 0
    for r in refs:
        name, rc, h, wd = outs[r]
        if groups > 1:
            step = rc // groups
            name = g.node("Slice", [name, g.const(f"route_{i}_{r}.starts", np.array([gid * step], np.int64)),
                                    g.const(f"route_{i}_{r}.ends", np.array([(gid + 1) * step], np.int64)),
                                    g.const(f"route_{i}_{r}.axes", np.array([1], np.int64))], f"route_{i}_slice_{r}")
            rc = step
        parts.append(name)
        c += rc
    if any(outs[r][2:] != (h, wd) for r in refs):
        raise UserError(f"{where}:{sec['line']}: route joins layers {refs} of different sizes")
    y = parts[0] if len(parts) == 1 else g.node("Concat", parts, f"route_{i}", axis=1)
    return y, c, h, wd


def _layer(g: _Graph, w: _Weights, sec: dict, i: int, state: tuple, outs: list, heads: list, where: str):
    """One section's nodes; returns the new (tensor, channels, height, width)."""
    x, c, h, wd = state
    kind = sec["type"]
    if kind == "convolutional":
        return _conv(g, w, sec, i, x, c, h, wd, where)
    if kind == "maxpool":
        return _maxpool(g, sec, i, x, c, h, wd, where)
    if kind == "route":
        return _route(g, sec, i, outs, where)
    if kind == "upsample":
        s = _int(sec, "stride", 2, where)
        x = g.node("Resize", [x, "", g.const(f"upsample_{i}.scales", np.array([1, 1, s, s], np.float32))],
                   f"upsample_{i}", mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        return x, c, h * s, wd * s
    if kind == "shortcut":
        r = _ints(sec.get("from", ""))[0]
        x = g.node("Add", [x, outs[r if r >= 0 else i + r][0]], f"shortcut_{i}")
        return g.activation(sec.get("activation", "linear"), x, f"shortcut_{i}"), c, h, wd
    if kind == "yolo":
        heads.append({**_head(sec, x, f"yolo_{i}", c, where), "_hw": (h, wd)})
        return state
    raise UserError(f"{where}:{sec['line']}: darknet layer [{kind}] not supported "
                    f"(convolutional, maxpool, route, upsample, shortcut, yolo)")


def _model(g: _Graph, heads: list, name: str, shape: list):
    """The ONNX model: each yolo head's input becomes a named graph output [1, A*(5+C), H, W]."""
    from onnx import TensorProto, helper

    for head in heads:
        g.nodes.append(helper.make_node("Identity", [head.pop("_input")], [head["output"]], name=head["output"]))
    outputs = [helper.make_tensor_value_info(hd["output"], TensorProto.FLOAT, [1, hd.pop("_channels"), *hd.pop("_hw")])
               for hd in heads]
    graph = helper.make_graph(g.nodes, name, [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, shape)],
                              outputs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="splitinfer")
    model.ir_version = 7  # opset 13's IR; onnxruntime 1.31/1.32 read at most 13
    helper.set_model_props(model, {"splitinfer.family": "yolo", "splitinfer.source": "darknet"})
    return model


def convert(cfg_path, weights_path) -> tuple:
    """(onnx.ModelProto, model.json dict without labels) for a darknet cfg and its weights."""
    where = str(cfg_path)
    sections = parse_cfg(cfg_path)
    net, layers = sections[0], sections[1:]
    h, wd, c = _int(net, "height", 416, where), _int(net, "width", 416, where), _int(net, "channels", 3, where)
    w = _Weights(Path(weights_path), _count_weights(layers, c, where))
    g, outs, heads = _Graph(), [], []
    state = (INPUT, c, h, wd)
    for i, sec in enumerate(layers):
        state = _layer(g, w, sec, i, state, outs, heads, where)
        outs.append(state)
    if not heads:
        raise UserError(f"{where}: no [yolo] section: not a YOLO detector")
    model = _model(g, heads, Path(cfg_path).stem.replace("-", "_"), [1, c, h, wd])
    info = {"family": "yolo", "name": f"{Path(cfg_path).stem} (darknet, {wd}x{h})",
            "yolo": {"layout": "darknet", "heads": heads},
            "preprocess": {"input": INPUT, "size": [wd, h], "resize": "letterbox", "fill": 127.5,
                           "channels": "RGB", "layout": "NCHW", "range": "0-1"},
            "nms": {"iou": 0.45},
            "source": {"cfg": Path(cfg_path).name, "cfg_sha256": _sha256(cfg_path),
                       "weights": Path(weights_path).name, "weights_sha256": _sha256(weights_path)}}
    return model, info


def _head(sec: dict, x: str, name: str, c: int, where: str) -> dict:
    anchors = _ints(sec.get("anchors", ""))
    pairs = [anchors[k:k + 2] for k in range(0, len(anchors) - 1, 2)]
    mask = _ints(sec["mask"]) if "mask" in sec else list(range(len(pairs)))
    classes = _int(sec, "classes", 80, where)
    if any(not 0 <= m < len(pairs) for m in mask) or c != len(mask) * (5 + classes):
        raise UserError(f"{where}:{sec['line']}: [yolo] mask {mask} over {len(pairs)} anchors does not fit "
                        f"{c} channels of {classes} classes")
    head = {"output": name, "anchors": [pairs[m] for m in mask], "classes": classes, "_input": x, "_channels": c}
    if "scale_x_y" in sec:
        head["scale_x_y"] = float(sec["scale_x_y"])
    return head


def _count_weights(layers: list[dict], c: int, where: str) -> int:
    """Float count the cfg needs from the weights file (channels followed through routes)."""
    chans, total = [], 0
    for i, sec in enumerate(layers):
        if sec["type"] == "convolutional":
            total += _conv_count(sec, c, where)
            c = _int(sec, "filters", where=where)
        elif sec["type"] == "route":
            refs = [r if r >= 0 else i + r for r in _ints(sec.get("layers", ""))]
            if not refs or any(not 0 <= r < i for r in refs):
                raise UserError(f"{where}:{sec['line']}: route layers={sec.get('layers')!r} must name earlier "
                                f"sections")
            c = sum(chans[r] for r in refs) // _int(sec, "groups", 1, where)
        chans.append(c)
    return total


def _sha256(path) -> str:
    from splitinfer.common.core.files import file_sha256

    return file_sha256(path)


def import_darknet(cfg_path, weights_path, out_dir, names_path=None) -> Path:
    """Write `out_dir/model.onnx` and `out_dir/model.json` (labels: COCO-80 when `names_path` lists COCO's
    classes in darknet's spelling, else a copy `labels.txt`); returns the folder."""
    from splitinfer.common.core.files import make_output_dir
    from splitinfer.common.core.onnx_io import save_model

    model, info = convert(cfg_path, weights_path)
    classes = info["yolo"]["heads"][0]["classes"]
    out = make_output_dir(out_dir)
    info["labels"] = _labels_entry(names_path, classes, out) if names_path else ("coco80" if classes == 80 else None)
    if info["labels"] is None:
        raise UserError(f"{cfg_path}: {classes} classes: give their names with --names FILE")
    save_model(model, out / "model.onnx")
    (out / "model.json").write_text(json.dumps(info, indent=2) + "\n")
    return out


def _labels_entry(names_path, classes: int, out: Path):
    from splitinfer.common.core.labels import COCO80_NAMES
    from splitinfer.common.families._geometry import read_labels

    names = read_labels(str(Path(names_path).resolve()), None, str(names_path))
    if len(names) != classes:
        raise UserError(f"{names_path}: {len(names)} names, the cfg's [yolo] sections have {classes} classes")
    if names == COCO80_NAMES:
        return "coco80"
    (out / "labels.txt").write_text("".join(n + "\n" for n in names))
    return "labels.txt"
