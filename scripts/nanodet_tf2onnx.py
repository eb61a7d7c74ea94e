"""Run `python -m tf2onnx.convert` under numpy 2.

tf2onnx 1.17 still calls `np.product`, which numpy 2 removed; it is the same function as `np.prod`.
Used only by scripts/convert_nanodet.sh, inside the converter venv (never by splitinfer itself).
"""

import runpy
import sys

import numpy as np

if not hasattr(np, "product"):
    np.product = np.prod

sys.argv = ["tf2onnx.convert", *sys.argv[1:]]
runpy.run_module("tf2onnx.convert", run_name="__main__")
