"""Consolidation, which runs on every frame: the model's outputs taken from Part I or Part II as the plan says.

Why apart from verify.py: the UE and the network process consolidate each frame (a model output may come
from Part I, when the cut passes it, or from Part II); checking a split against the whole model is a
separate, offline job. Defined terms: *consolidated outputs* (the model's outputs by name, in the model's
order, each taken from the part the plan says yields it); *running a split* (Part I, then Part II on the
crossing tensors, then consolidation).
"""

from __future__ import annotations

import numpy as np

from splitinfer.common.core.runtime import input_names_of, keep_feeds
from splitinfer.common.split.plan import SplitPlan


def run_session(session, feeds: dict, names: list[str]) -> dict:
    """Outputs `names` of a `Session` or bare InferenceSession, fed only the feeds it takes."""
    ort_sess = getattr(session, "ort", session)
    outs = ort_sess.run(names, keep_feeds(feeds, input_names_of(session)))
    return dict(zip(names, outs))


def consolidate(plan: SplitPlan, part1_outputs: dict, part2_outputs: dict) -> list[np.ndarray]:
    """The model's outputs in their original order, taken from Part I or Part II as the plan says."""
    result = []
    for name, part in plan.consolidation:
        src = part1_outputs if part == "I" else part2_outputs
        if name not in src:
            raise KeyError(f"output {name!r} expected from Part {part} is missing")
        result.append(src[name])
    return result


def consolidated_outputs(plan: SplitPlan, part1_outputs: dict, part2_outputs: dict) -> dict:
    """`consolidate` as a dict: model output name -> array, in the model's order."""
    return dict(zip(plan.output_names, consolidate(plan, part1_outputs, part2_outputs)))


def run_split(part1_session, part2_session, plan: SplitPlan, feeds: dict) -> dict:
    """Run Part I then Part II (sessions from `make_session` or onnxruntime) and reassemble outputs."""
    out1 = run_session(part1_session, feeds, plan.part1_outputs)
    out2 = {}
    if not plan.part2_identity:
        out2 = run_session(part2_session, {n: out1[n] for n in plan.part2_inputs}, plan.part2_outputs)
    return consolidated_outputs(plan, out1, out2)
