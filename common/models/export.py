"""Torch exports of the field's two reference detectors: ssd_resnet (SSD300 ResNet-50) and retinanet.

Split analysis must see the same graph the reference studies cut, so the structure, exporter and tensor
names follow the originals: NVIDIA DeepLearningExamples' SSD300 through the TorchScript exporter, and
torchvision's retinanet_resnet50_fpn with its transform and post-processing inside the graph. Nothing is
downloaded unless asked for (`weights="DEFAULT"`); offline the weights are random but deterministic.
"""

from __future__ import annotations

import urllib.error
import warnings
from pathlib import Path

from splitinfer.common.core.errors import UserError, require_file

OPSET = 13
SSD_INPUT = "input"
SSD_OUTPUTS = ("output1", "output2")
SSD_NUM_CLASSES = 81
SSD_NUM_DEFAULTS = (4, 6, 6, 6, 4, 4)
SSD_NUM_BOXES = 8732
RETINANET_INPUT = "input"
RETINANET_OUTPUTS = ("boxes", "scores", "labels")
EXPORTABLE = ("ssd_resnet", "retinanet")
# The TR's retinanet.onnx (TR 26.847 clause 5.3.9, 5G-MAG's models/): torchvision's RetinaNet v2
# (retinanet_resnet50_fpn_v2) exported whole by the TorchScript exporter from a batch tensor, so its input is
# `input_images` [bs,3,h,w] and its outputs (boxes, scores, labels of the first image) keep the exporter's
# numeric names (the TR's: 2734, 2712, 2713; they depend on the torch version). Opset 11 comes closest.
RETINANET_VARIANTS = ("torchvision", "tr")
TR_RETINANET_INPUT = "input_images"
TR_RETINANET_OPSET = 11
TR_RETINANET_NODES = 2248          # the TR's node count (its split points run to node 2248)
TR_RETINANET_OUTPUTS = ("2734", "2712", "2713")
# Tensors the TR lists as Part I's output at node 2230: the same names come out of this export.
TR_RETINANET_NODE_2230 = ("/Concat_27_output_0", "/Slice_50_output_0", "/Gather_output_0", "/Cast_4_output_0",
                          "/Gather_1_output_0", "/Cast_3_output_0", "/Gather_68_output_0")


def _torch():
    import torch
    import torch.nn as nn

    return torch, nn


def build_ssd300(seed: int = 0):
    """NVIDIA's SSD300 (ResNet-50 backbone), module for module, with deterministic random weights."""
    torch, nn = _torch()
    ssd300 = _ssd300_class(torch, nn, _backbone_class(nn))
    torch.manual_seed(seed)
    model = ssd300()
    randomize_batchnorm(model, seed)
    return model.eval()


def _backbone_class(nn):
    """NVIDIA's SSD ResNet-50 feature extractor (torchvision's resnet50 up to layer3, layer3 at stride 1)."""
    from torchvision.models import resnet50

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            backbone = resnet50(weights=None)
            self.out_channels = [1024, 512, 512, 256, 256, 256]
            self.feature_extractor = nn.Sequential(*list(backbone.children())[:7])
            conv4_block1 = self.feature_extractor[-1][0]  # layer3 block 1 at stride 1: 38x38 for 300x300
            conv4_block1.conv1.stride = (1, 1)
            conv4_block1.conv2.stride = (1, 1)
            conv4_block1.downsample[0].stride = (1, 1)

        def forward(self, x):
            return self.feature_extractor(x)

    return ResNet


def _ssd300_class(torch, nn, backbone):
    """NVIDIA's SSD300 module on `backbone`: extra feature blocks, and loc/conf heads per feature map."""
    class SSD300(nn.Module):
        def __init__(self):
            super().__init__()
            self.feature_extractor = backbone()
            self.label_num = SSD_NUM_CLASSES
            self._build_additional_features(self.feature_extractor.out_channels)
            self.num_defaults = list(SSD_NUM_DEFAULTS)
            self.loc = nn.ModuleList()
            self.conf = nn.ModuleList()
            for nd, oc in zip(self.num_defaults, self.feature_extractor.out_channels):
                self.loc.append(nn.Conv2d(oc, nd * 4, kernel_size=3, padding=1))
                self.conf.append(nn.Conv2d(oc, nd * self.label_num, kernel_size=3, padding=1))
            for layer in [*self.additional_blocks, *self.loc, *self.conf]:
                for param in layer.parameters():
                    if param.dim() > 1:
                        nn.init.xavier_uniform_(param)

        def _build_additional_features(self, sizes):
            blocks = []
            for i, (cin, cout, ch) in enumerate(zip(sizes[:-1], sizes[1:], [256, 256, 128, 128, 128])):
                conv2 = (nn.Conv2d(ch, cout, kernel_size=3, padding=1, stride=2, bias=False) if i < 3
                         else nn.Conv2d(ch, cout, kernel_size=3, bias=False))
                blocks.append(nn.Sequential(
                    nn.Conv2d(cin, ch, kernel_size=1, bias=False), nn.BatchNorm2d(ch), nn.ReLU(inplace=True),
                    conv2, nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                ))
            self.additional_blocks = nn.ModuleList(blocks)

        def bbox_view(self, src, loc, conf):
            ret = [(l(s).reshape(s.size(0), 4, -1), c(s).reshape(s.size(0), self.label_num, -1))
                   for s, l, c in zip(src, loc, conf)]
            locs, confs = list(zip(*ret))
            return torch.cat(locs, 2).contiguous(), torch.cat(confs, 2).contiguous()

        def forward(self, x):
            x = self.feature_extractor(x)
            detection_feed = [x]
            for block in self.additional_blocks:
                x = block(x)
                detection_feed.append(x)
            return self.bbox_view(detection_feed, self.loc, self.conf)

    return SSD300


def randomize_batchnorm(model, seed: int = 0) -> None:
    """Give every batch norm distinct statistics and affine terms, and zero conv biases small values,
    as a trained checkpoint has.

    With default initialisation (BN mean 0, var 1, weight 1, bias 0; zero conv biases) many folded
    biases are identical zero tensors; the exporter then shares them through Identity nodes and the node
    ranks no longer match those of the reference (trained) graphs.
    """
    torch, nn = _torch()
    from torchvision.ops.misc import FrozenBatchNorm2d

    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
                n = m.weight.shape[0]
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
            elif isinstance(m, nn.Conv2d) and m.bias is not None and not torch.any(m.bias):
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.01)


def read_state_dict(path: str | Path) -> dict:
    """Tensors of a torch checkpoint, loaded without unpickling code (weights_only=True).

    Accepts a bare state dict or the usual wrappers ({'model': ...}, {'state_dict': ...}); strips the
    'module.' prefix DataParallel/DDP training adds.
    """
    torch, _ = _torch()
    path = require_file(path, "checkpoint")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"{path}: not a loadable torch checkpoint of plain tensors ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(hasattr(v, "shape") for v in obj.values()):
        raise UserError(f"{path}: expected a state dict (parameter name -> tensor)")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def load_into(model, state: dict, source: str) -> None:
    """Load a state dict strictly, reporting missing/unexpected/mis-shaped keys as a UserError."""
    own = model.state_dict()
    # BatchNorm2d counts batches, FrozenBatchNorm2d does not: the counter carries no weight.
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked") or k in own}
    for k in own:
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = own[k]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}" for k in own
             if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            parts.append(f"{len(wrong)} with wrong shape (e.g. {wrong[0]})")
        raise UserError(f"{source}: does not fit this model: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def _tmp_path(out: Path) -> Path:
    import os

    return out.with_name(f".{out.name}.{os.getpid()}.tmp")


def _save_onnx(tmp: Path, out: Path, family: str, weights_note: str) -> Path:
    """Re-save the exporter's file through onnx_io (IR cap) with the family recorded in the metadata.

    The exporter writes a temporary file; `out` only appears once complete.
    """
    import onnx

    from splitinfer.common.core.onnx_io import save_model

    try:
        model = onnx.load(str(tmp))
        for key, value in (("splitinfer.family", family), ("splitinfer.weights", weights_note)):
            prop = next((p for p in model.metadata_props if p.key == key), None) or model.metadata_props.add()
            prop.key, prop.value = key, value
        return save_model(model, out)
    finally:
        tmp.unlink(missing_ok=True)


def export_ssd_resnet(out: str | Path, checkpoint: str | Path | None = None, seed: int = 0,
                      opset: int = OPSET) -> Path:
    """Export SSD300 ResNet-50: `input` [1,3,300,300] -> `output1` [1,4,8732], `output2` [1,81,8732]."""
    torch, _ = _torch()
    out = Path(out)
    model = build_ssd300(seed)
    note = f"random (seed {seed}, non-trivial batch-norm statistics)"
    if checkpoint is not None:
        load_into(model, read_state_dict(checkpoint), str(checkpoint))
        note = f"checkpoint {Path(checkpoint).name}"
    model.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    x = torch.rand(1, 3, 300, 300, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is chosen on purpose
        tmp = _tmp_path(out)
        try:
            torch.onnx.export(model, (x,), str(tmp), dynamo=False, opset_version=opset, do_constant_folding=True,
                              input_names=[SSD_INPUT], output_names=list(SSD_OUTPUTS))
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return _save_onnx(tmp, out, "ssd_resnet", note)


def build_retinanet(weights: str | Path | None = None):
    """torchvision's retinanet_resnet50_fpn as its builder makes it for trained weights.

    Same blocks as `retinanet_resnet50_fpn(weights=...)` (FrozenBatchNorm2d backbone, FPN on layers 2-4 with
    P6/P7, 91 classes), so the graph has the structure of an export of the trained model. Weights: random
    (seed 0, non-trivial batch-norm buffers) by default, 'DEFAULT' = torchvision's COCO weights (fetched
    from download.pytorch.org unless already in the torch hub cache), or a local state-dict file.
    """
    torch, _ = _torch()
    from torchvision.models import resnet50
    from torchvision.models.detection import RetinaNet_ResNet50_FPN_Weights
    from torchvision.models.detection._utils import overwrite_eps
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.models.detection.retinanet import RetinaNet
    from torchvision.ops import misc as misc_nn_ops
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    default = weights is not None and str(weights) == "DEFAULT"
    state = fetch_torchvision_retinanet_weights() if default else None  # fail fast, before building
    if weights is not None and not default:
        state = read_state_dict(weights)
    torch.manual_seed(0)
    backbone = resnet50(weights=None, norm_layer=misc_nn_ops.FrozenBatchNorm2d)
    backbone = _resnet_fpn_extractor(backbone, 3, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256))
    model = RetinaNet(backbone, num_classes=91)
    if weights is None:
        randomize_batchnorm(model, 0)
        return model.eval(), "random (seed 0, non-trivial batch-norm statistics)"
    source = "torchvision RetinaNet_ResNet50_FPN_Weights.DEFAULT" if default else str(weights)
    load_into(model, state, source)
    if default or Path(weights).name == Path(RetinaNet_ResNet50_FPN_Weights.DEFAULT.url).name:
        overwrite_eps(model, 0.0)  # COCO_V1 was trained with eps 0; torchvision's builder does the same
    return model.eval(), (f"{source} (COCO_V1)" if default else f"state dict {Path(weights).name}")


def randomize_groupnorm_and_biases(model, seed: int = 0) -> None:
    """Distinct GroupNorm affine terms and conv biases, as training leaves them.

    RetinaNet v2's head initialises every GroupNorm to (1, 0) and its conv biases to one constant; the
    exporter would share those equal initializers through extra Identity nodes, which a trained export
    does not have.
    """
    torch, nn = _torch()
    g = torch.Generator().manual_seed(seed + 2)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.GroupNorm) and m.affine:
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, nn.Conv2d) and m.bias is not None and bool(torch.all(m.bias == m.bias.flatten()[0])):
                m.bias.add_(torch.randn(m.bias.shape, generator=g) * 0.01)


def build_retinanet_v2(weights: str | Path | None = None):
    """torchvision's retinanet_resnet50_fpn_v2 (the TR's model): random weights by default (seed 0, trained-like
    batch-norm, GroupNorm and bias values), 'DEFAULT' = torchvision's COCO weights, or a state-dict file."""
    torch, _ = _torch()
    from torchvision.models.detection import retinanet_resnet50_fpn_v2

    default = weights is not None and str(weights) == "DEFAULT"
    state = fetch_torchvision_retinanet_weights(v2=True) if default else None
    if weights is not None and not default:
        state = read_state_dict(weights)
    torch.manual_seed(0)
    model = retinanet_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=91)
    if weights is None:
        randomize_batchnorm(model, 0)
        randomize_groupnorm_and_biases(model, 0)
        return model.eval(), "random (seed 0, non-trivial batch-norm/group-norm statistics)"
    source = "torchvision RetinaNet_ResNet50_FPN_V2_Weights.DEFAULT" if default else str(weights)
    load_into(model, state, source)
    return model.eval(), (f"{source} (COCO_V1)" if default else f"state dict {Path(weights).name}")


def fetch_torchvision_retinanet_weights(v2: bool = False) -> dict:
    """Download (or take from the torch hub cache) torchvision's trained RetinaNet (v1 or v2) weights."""
    import torch.hub
    from torchvision.models.detection import RetinaNet_ResNet50_FPN_V2_Weights, RetinaNet_ResNet50_FPN_Weights

    w = (RetinaNet_ResNet50_FPN_V2_Weights if v2 else RetinaNet_ResNet50_FPN_Weights).DEFAULT
    try:
        return torch.hub.load_state_dict_from_url(w.url, progress=True, check_hash=True, weights_only=True)
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise UserError(
            f"cannot fetch torchvision's RetinaNet weights from {w.url} ({reason}); without network, download "
            f"that file elsewhere and pass it with --weights FILE (or put it in {torch.hub.get_dir()}/checkpoints)"
        ) from None


def export_retinanet(out: str | Path, weights: str | Path | None = None, opset: int = OPSET,
                     sample_hw: tuple[int, int] = (240, 960)) -> Path:
    """Export retinanet with transform + post-processing in the graph.

    The traced sample is wide so the in-graph resize makes it small (333x1333): same graph, cheaper trace.

    `input` [3,H,W] float RGB in [0,1] (H, W dynamic) -> `boxes` [N,4] in input pixels, `scores` [N],
    `labels` [N] (COCO category ids).
    """
    torch, _ = _torch()
    out = Path(out)
    model, note = build_retinanet(weights)
    out.parent.mkdir(parents=True, exist_ok=True)
    x = torch.rand(3, *sample_hw, generator=torch.Generator().manual_seed(0))
    dyn = {RETINANET_INPUT: {1: "height", 2: "width"}, **{k: {0: "detections"} for k in RETINANET_OUTPUTS}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about python-side shape logic, expected here
        tmp = _tmp_path(out)
        try:
            torch.onnx.export(model, ([x],), str(tmp), dynamo=False, opset_version=opset, do_constant_folding=True,
                              input_names=[RETINANET_INPUT], output_names=list(RETINANET_OUTPUTS),
                              dynamic_axes=dyn)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return _save_onnx(tmp, out, "retinanet", note)


def export_retinanet_tr(out: str | Path, weights: str | Path | None = None, opset: int = TR_RETINANET_OPSET,
                        sample_hw: tuple[int, int] = (240, 960)) -> Path:
    """Export RetinaNet as the TR's retinanet.onnx was made: retinanet_resnet50_fpn_v2 exported whole from a
    batch tensor `input_images` [bs,3,h,w] (RGB in [0,1], bs/h/w dynamic) -> boxes [N,4], scores [N],
    labels [N] of the first image, under the exporter's numeric names.

    How close it comes (torch 2.x, opset 11): 2,249 nodes against the TR's 2,248, outputs named 2742/2720/2721
    against 2734/2712/2713, and the seven tensors the TR lists at node 2230 exist by the same names.
    """
    torch, _ = _torch()
    out = Path(out)
    model, note = build_retinanet_v2(weights)
    out.parent.mkdir(parents=True, exist_ok=True)
    x = torch.rand(1, 3, *sample_hw, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about python-side shape logic, expected here
        tmp = _tmp_path(out)
        try:
            torch.onnx.export(model, (x,), str(tmp), dynamo=False, opset_version=opset, do_constant_folding=True,
                              input_names=[TR_RETINANET_INPUT],
                              dynamic_axes={TR_RETINANET_INPUT: {0: "bs", 2: "h", 3: "w"}})
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return _save_onnx(tmp, out, "retinanet_tr", note)


def export(name: str, out: str | Path, checkpoint=None, weights=None, variant: str = "torchvision") -> Path:
    if variant not in RETINANET_VARIANTS:
        raise UserError(f"unknown variant {variant!r} (known: {', '.join(RETINANET_VARIANTS)})")
    if variant != "torchvision" and name != "retinanet":
        raise UserError(f"--variant {variant} is a retinanet variant; {name} has none")
    if name == "ssd_resnet":
        if weights is not None:
            raise UserError("ssd_resnet takes --checkpoint FILE (no downloadable default weights)")
        return export_ssd_resnet(out, checkpoint=checkpoint)
    if name == "retinanet":
        if checkpoint is not None and weights is not None:
            raise UserError("retinanet: give --weights or --checkpoint, not both")
        chosen = weights if weights is not None else checkpoint
        return export_retinanet_tr(out, weights=chosen) if variant == "tr" else export_retinanet(out, weights=chosen)
    raise UserError(f"no exporter for {name!r} (exportable: {', '.join(EXPORTABLE)})")
