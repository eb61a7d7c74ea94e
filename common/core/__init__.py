"""Core layer: the helpers every other layer may use and that use nothing above them.

Defined terms: *model spec* (a path, or a model id of the bundled repository), *frame* (one BGR image,
from a file, a folder or a video), *detection* (`label x1 y1 x2 y2 score` in image pixels).
Modules: `errors` (UserError), `onnx_io` (load/save with clear errors), `runtime` (onnxruntime
sessions that say which provider really ran), `labels`, `detections` (+ NMS), `images` (frame sources).
"""
