"""The UE's reference in one place: what a split's detections are compared with, run here, and the agreement.

Two references (terms of agreement.py, which holds the rule that decides agreement):
- the *anchor*: the whole model run locally on CPU and/or GPU (`-no_CPU_anchor`, `-no_GPU_anchor`), fed the
  frame's own feeds; its time and detections fill the `Anchor_*` and `Equal_to_anchor` columns.
- *-ref_split LABEL*: the same split run locally without codec or network (Part I's outputs straight into a
  local Part II, then consolidation); its detections fill `Equal_to_ref_split` and `predictions_LABEL/`.
Each answered FrameRecord carries what the references need (its feeds, meta and Part I outputs, kept only
when a reference runs); `Reference.check(rec)` runs them after the reply, so they never delay a frame.
"""

from __future__ import annotations

from splitinfer.device.agreement import Verdict, compare_detections, verdict


def make_anchors(args, model_path, family, say=print) -> dict:
    """The whole model on CPU and/or GPU (as the -no_CPU_anchor / -no_GPU_anchor flags allow)."""
    from splitinfer.common.core.runtime import CUDA, available_providers
    from splitinfer.device.part1 import Anchor, check_family

    anchors = {}
    if not args.no_cpu_anchor:
        anchors["cpu"] = Anchor(model_path, "cpu", threads=args.threads)
    if not args.no_gpu_anchor and CUDA in available_providers():
        anchors["gpu"] = Anchor(model_path, "gpu", threads=args.threads)
    elif not args.no_gpu_anchor:
        say("no usable CUDA here, GPU anchor skipped")
    for anchor in anchors.values():
        check_family(model_path, family, anchor.session.input_names)
    return anchors


class Reference:
    """The anchors and the -ref_split Part II of one run (either may be absent)."""

    def __init__(self, family, anchors: dict, part1=None, ref_session=None, label: str | None = None):
        self.family, self.anchors, self.part1 = family, anchors, part1
        self.ref_session, self.label = ref_session, label

    @classmethod
    def for_run(cls, args, model_path, family, part1, say=print) -> "Reference":
        """The references `splitinfer device` options ask for (Part II for -ref_split cut here or -partII)."""
        ref_session = None
        if args.ref_split is not None:
            ref_session = part1.part2_session(args.part2, device=args.pu_part1, threads=args.threads,
                                              check_model=not args.no_check_model)
        return cls(family, make_anchors(args, model_path, family, say), part1, ref_session, args.ref_split)

    @property
    def needs_feeds(self) -> bool:
        """Records must keep their feeds (the anchors run on them)."""
        return bool(self.anchors)

    @property
    def needs_intermediate(self) -> bool:
        """Records must keep Part I's outputs (-ref_split runs Part II on them)."""
        return self.label is not None

    def check(self, rec) -> list | None:
        """Run the references for one answered frame: `rec.anchor[device] = (seconds, detections)`,
        `rec.ref_agreement` with -ref_split; returns -ref_split's detections (None without it). Frees the
        record's feeds."""
        for dev, anchor in self.anchors.items():
            dets, seconds = anchor.infer(rec.feeds, rec.meta, self.family)
            rec.anchor[dev] = (seconds, dets)
        rec.feeds = None
        if self.label is None or rec.intermediate is None:
            return None
        ref_dets = self.ref_split_detections(rec.intermediate, rec.meta)
        rec.ref_agreement = compare_detections(ref_dets, rec.detections)
        return ref_dets

    def ref_split_detections(self, intermediate: dict, meta: dict) -> list:
        """-ref_split: Part II run here on Part I's outputs, consolidated and post-processed."""
        from splitinfer.common.split import consolidated_outputs

        plan = self.part1.plan
        out2 = {} if self.ref_session is None else dict(
            zip(self.ref_session.output_names, self.ref_session.run({n: intermediate[n] for n in plan.part2_inputs})))
        return self.family.postprocess(consolidated_outputs(plan, intermediate, out2), meta)


def anchor_verdict(records) -> Verdict | None:
    """The agreement of the records' detections with their anchors' (every device), None without anchors."""
    pairs = [(dets, r.detections) for r in records for _, dets in r.anchor.values()]
    return verdict(compare_detections(a, s) for a, s in pairs) if pairs else None


def ref_split_verdict(records) -> Verdict | None:
    """The agreement of the records' detections with -ref_split's, None where none was compared."""
    agreements = [r.ref_agreement for r in records if r.ref_agreement is not None]
    return verdict(agreements) if agreements else None
