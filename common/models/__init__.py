"""Models layer: detectors made into ONNX files, and ONNX files written for other servers.

`export` (torch exports of the field's reference detectors), `darknet` (Darknet .cfg/.weights to ONNX),
`zoo` (the splitability zoo: models fetched or exported on demand), `triton` (split parts in Triton
Inference Server's model repository layout). Not studies: they make the models that studies and commands use.
"""
