"""nncodec's coding core driven in this process: one float32 tensor to a standard NNR bitstream and back.

Why `nncodec.nnc_core` directly rather than `nncodec.tensor`: `tensor.encode` writes a `.nnc` file per call
and `nncodec.nnc` imports torch (~10 s, ~1 GB) although coding never uses it. Settings are
`nncodec.tensor.encode`'s defaults (below). Concurrency: nncodec keeps shared mutable state (mutable
default `hls_stats={}` dicts) and its pybind calls never release the GIL, so calls here are serialised
by one lock, re-created in a forked child. Untrusted bitstreams are decoded in helper processes
(nnc_pool.py), which call `decode_nnr` there.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from splitinfer.common.codecs import CodecError

NAME = "nnc"  # the codec whose bitstreams these are (nnc.py), named by every error

# nncodec.tensor.encode's defaults
QP_DENSITY = 2
NONWEIGHT_QP = -75
USE_DQ = True
PARAM_OPT = True
ROW_SKIPPING = True
CABAC_UNARY_LENGTH_MINUS1 = 10
TENSOR_ID = "0"

_core_lock = threading.Lock()  # serialises in-process nncodec calls (shared state, GIL held anyway)


def _new_lock_after_fork() -> None:
    global _core_lock
    _core_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_after_fork)


def core():
    """nncodec's coding core, imported on first use (numpy + the deepCABAC extension; no torch)."""
    from nncodec.nnc_core import approximator, coder, nnr_model

    return approximator, coder, nnr_model


def encode_nnr(x: np.ndarray, qp: int) -> bytes:
    """NNR bitstream of one float32 tensor (2+ dims) at `qp`, as `nncodec.nnc.compress` makes it."""
    approximator, coder, nnr_model = core()
    with _core_lock:
        params = {TENSOR_ID: x}
        model = nnr_model.NNRModel(params)
        info = model.model_info
        data = approximator.init_approx_data(params, info, qp_density=QP_DENSITY, scan_order=0)
        approx_info = approximator.ApproxInfo(
            data, info, "uniform", 0, qp, False, not USE_DQ, CABAC_UNARY_LENGTH_MINUS1, 0,
            nonweight_qp=NONWEIGHT_QP, qp_per_tensor=None, int_quant_bw=None,
        ).approx_info
        enc_info = {
            "cabac_unary_length_minus1": CABAC_UNARY_LENGTH_MINUS1,
            "param_opt_flag": PARAM_OPT,
            "partial_data_counter": 0,
            "general_profile_idc": 1,
            "node_id_present_flag": 1,
            "device_id": 0,
            "mps_parent_signalling_enabled_flag": 0,
            "parent_node_id_present_flag": 0,
            "temporal_context_modeling_flag": 0,
            "row_skip_enabled_flag": 1 if ROW_SKIPPING else 0,
            "pre_signalling": 0,
        }
        enc = approximator.approx(approx_info, info, data, enc_info)
        bitstream, _ = coder.encode(enc_info=enc_info, model_info=info, approx_data=enc,
                                    approx_param_base=None, update_base_param=False, tool_if=None)
    return bytes(bitstream)


def _claimed_values(coder, bitstream) -> int:
    """Values the first NNR data unit's header announces (tensor_dimensions), read without decoding data."""
    info = {"parameter_type": {}, "parameter_dimensions": {}, "parameter_index": {}, "block_identifier": {},
            "topology_storage_format": None, "topology_compression_format": None,
            "performance_maps": {"mps": {}, "lps": {}}, "performance_map_flags": {}}
    ndu = coder.decode_ndu_unit_header(bytearray(bitstream), info, hls_stats={})
    dims = ndu.get("tensor_dimensions") if isinstance(ndu, dict) else None
    if dims is None or not 1 <= len(dims) <= 8:
        raise CodecError(f"{NAME}: bitstream announces no tensor dimensions")
    claimed = 1
    for d in dims:
        claimed *= int(d)
    return claimed


def decode_nnr(bitstream, expected: int) -> np.ndarray:
    """Flat float32 values of a one-tensor NNR bitstream, in this process; CodecError if it is not one."""
    approximator, coder, _ = core()
    model_info = {
        "parameter_type": {}, "parameter_dimensions": {}, "parameter_index": {}, "block_identifier": {},
        "topology_storage_format": None, "topology_compression_format": None,
        "performance_maps": {"mps": {}, "lps": {}},
        "performance_map_flags": {k: {} for k in (
            "mps_sparsification_flag", "lps_sparsification_flag", "mps_pruning_flag", "lps_pruning_flag",
            "mps_unification_flag", "lps_unification_flag", "mps_decomposition_performance_map_flag",
            "lps_decomposition_performance_map_flag")},
    }
    try:
        with _core_lock, np.errstate(all="ignore"):
            claimed = _claimed_values(coder, bitstream)
            if claimed != expected:  # before any value is decoded: the header's size must be the announced one
                raise CodecError(f"{NAME}: bitstream claims {claimed} values but the tensor's shape needs {expected}")
            data = coder.decode(bytearray(bitstream), model_info, oob_dict={}, tool_if=None, hls_stats={},
                                approx_param_base=None, update_base_param=False, return_hls=False)
            approximator.rec(data)
            params = approximator.recompose_params(model_info, data)["parameters"]
    except CodecError:
        raise
    except (Exception, SystemExit) as exc:  # nncodec signals bad streams with assert/KeyError/RuntimeError/exit
        text = " ".join(str(exc).split())[:200]
        raise CodecError(f"{NAME}: corrupt bitstream ({type(exc).__name__}: {text})") from None
    if len(params) != 1:
        raise CodecError(f"{NAME}: bitstream holds {len(params)} tensors, expected 1")
    (values,) = params.values()
    values = np.asarray(values)
    if values.size != expected:
        raise CodecError(f"{NAME}: bitstream holds {values.size} values but the tensor's shape needs {expected}")
    return values.astype(np.float32, copy=False).reshape(-1)
