"""Split layer: cut any ONNX model at any node into Part I (UE) and Part II (network).

Defined terms: *rank* (a node's position in one fixed topological order), *cut* (a rank, or a node
name with `before`/`after`), *crossing tensors* (the tensors Part I produces that Part II consumes,
plus final outputs Part I already yields), *plan* (the resolved cut: both parts' inputs and outputs).
"""
