"""Entry point of the UE process: read frames, run them through the split system, write the results.

`splitinfer device` calls `run_device(args)`; `python -m splitinfer.device.main ARGS` does the same
without the CLI. Per frame: preprocess, Part I, encode, send to the network process, receive the
detections (pipeline.FramePipeline); optionally the anchor and the `-ref_split` reference run locally
for comparison (agreement.py). Terms:
- results: the results CSV (results.py; `-results_filename` as given, default `-results_dir`/results.csv)
  with its per-frame log `<results>_frames.csv` beside it; predictions and overlays under `-results_dir`.
- stopping: every way the run ends (all frames done, SIGTERM, Ctrl-C, the server gone, an error) ends
  every frame read (a row in the per-frame log) and writes the results of the frames that ended before
  the process exits (0; 1 when a frame failed; 2 with one line for an error; 130 when interrupted).
  Once every frame has ended, a signal no longer interrupts: it only cuts `--metrics-linger` short.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

from splitinfer.common.core.allocator import tune_allocator
from splitinfer.common.core.errors import UserError

PREFIX = "splitinfer device:"


def say(text: str, err: bool = False) -> None:
    print(f"{PREFIX} {text}", file=sys.stderr if err else sys.stdout, flush=True)


# ----------------------------------------------------------------------------------------------
# signals


class StopSignals:
    """SIGTERM and SIGINT: KeyboardInterrupt while frames run (`interrupting`); afterwards they only set
    `requested`, so writing the results completes and lingering ends early. A no-op off the main thread."""

    def __init__(self):
        self.requested = threading.Event()
        self.interrupting = True
        self._previous = {}

    def _handler(self, signum, frame):
        self.requested.set()
        if self.interrupting:
            raise KeyboardInterrupt

    def __enter__(self):
        for s in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[s] = signal.signal(s, self._handler)
            except ValueError:  # not the main thread
                break
        return self

    def __exit__(self, *exc):
        for s, h in self._previous.items():
            signal.signal(s, h)
        return False


def stop_reason(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C / SIGTERM)"
    if isinstance(exc, UserError):
        return f"stopped: {exc}"
    return f"stopped: {type(exc).__name__}: {exc}"


# ----------------------------------------------------------------------------------------------
# options


def label_mapper(path):
    """Detection names -> the names of a coco_labels.csv (its ids are COCO-80 indices or category ids)."""
    from splitinfer.common.core.labels import COCO80_NAMES, NAME_TO_CATEGORY_ID, read_labels_csv

    table = read_labels_csv(path)
    by_category = max(table) >= len(COCO80_NAMES)
    index = NAME_TO_CATEGORY_ID if by_category else {n: i for i, n in enumerate(COCO80_NAMES)}

    def label_of(name: str) -> str:
        key = index.get(name)
        return table.get(key, name) if key is not None else name

    return label_of


def family_for(model, name: str | None):
    """The Family of a resolved model (`common/core/models.py` `resolve`): -f, else the one it records."""
    from splitinfer.common import families

    name = name or model.family_name
    if not name:
        raise UserError(f"{model.model_path}: model family unknown (no splitinfer.family metadata, no model.json "
                        f"beside it): give it with -f ({', '.join(families.family_names())})")
    return families.family_for_model(model.model_path, name, model.info)  # set up by its model.json


class ThresholdFamily:
    """A family whose post-processing keeps scores at or above `device --threshold` instead of the family's
    display threshold, here (anchors, -ref_split) and on the server: the threshold travels in each frame's
    meta (`score_threshold`, checked by server/meta.py)."""

    def __init__(self, family, threshold: float):
        self._family, self.threshold = family, float(threshold)

    def __getattr__(self, name):
        return getattr(self._family, name)

    def preprocess(self, image):
        feeds, meta = self._family.preprocess(image)
        return feeds, {**meta, "score_threshold": self.threshold}

    def postprocess(self, outputs, meta, score_threshold=None):
        return self._family.postprocess(outputs, meta, self.threshold if score_threshold is None else score_threshold)


def check_ref_label(label: str) -> str:
    """A `-ref_split` label names a folder under -results_dir: one plain name."""
    if not label or label.startswith(".") or any(c in label for c in "/\\\0"):
        raise UserError(f"-ref_split {label!r}: give a plain label (letters, digits, _ -), e.g. split_node_0060")
    return label


def retry_policy(args):
    from splitinfer.device.retry import RetryPolicy

    return RetryPolicy.from_options(args.timeout, args.reconnect_s, args.max_attempts)


def results_path(args) -> Path:
    """`-results_filename` as given (the TR's 'path to .csv results file'), else results.csv in -results_dir."""
    return Path(args.results_filename) if args.results_filename else Path(args.results_dir) / "results.csv"


class Outputs:
    """Where a run writes: results CSV, per-frame log, predictions, overlays, intermediate data."""

    def __init__(self, args):
        self.out_dir = Path(args.results_dir)
        self.results = results_path(args)
        self.overlays = not args.no_overlay
        self.label_of = label_mapper(args.labels_coco) if args.labels_coco else None
        self.warning, self.warned = getattr(args, "random_weights", None), set()

    def shown(self, dets):
        return dets if self.label_of is None else [type(d)(self.label_of(d.label), *d.box, d.score) for d in dets]

    def write_predictions(self, name: str, dets, image, folder: str = "predictions") -> None:
        from splitinfer.common.core.detections import write_predictions

        shown = self.shown(dets)
        write_predictions(self.out_dir / folder / f"{name}.txt", shown)
        if self.warning and folder not in self.warned:  # beside the predictions, so no one takes them for results
            (self.out_dir / folder / "WARNING.md").write_text(self.warning + "\n")
            self.warned.add(folder)
        if self.overlays and folder == "predictions":
            from splitinfer.common.core.images import write_image
            from splitinfer.common.eval.overlay import draw_detections

            write_image(self.out_dir / "overlays" / f"{name}.jpg", draw_detections(image, shown))

    def save_intermediate(self, rec) -> None:
        path = self.out_dir / "intermediate" / f"{rec.source}_loop{rec.index}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **{f"t{i}": a for i, a in enumerate(rec.intermediate.values())},
                 names=np.array(list(rec.intermediate)))


class Source:
    """The frames to run: (name, loop index, image) for each frame of the source, `-loop` times each."""

    def __init__(self, args):
        from splitinfer.common.assets import IMAGES_DIR
        from splitinfer.common.core.images import frame_count, is_video

        self.path = Path(args.source) if args.source else IMAGES_DIR
        if not self.path.exists():  # checked before anything slow (sessions, connection)
            raise UserError(f"source not found: {self.path}")
        self.loops, self.nb_frames = args.loop, args.nb_frames
        self.video = self.path.is_file() and is_video(self.path)
        total = frame_count(self.path)
        if total is not None and self.nb_frames:
            total = min(total, self.nb_frames)
        self.total = total * self.loops if total else None

    def __iter__(self):
        from splitinfer.common.core.images import iter_frames

        for name, img in iter_frames(self.path, self.nb_frames):
            for k in range(self.loops):
                yield name, k, img

    def group_of(self, name: str) -> str:
        """The results row a frame belongs to: its image, or the whole video."""
        return self.path.name if self.video else name


def check_options(args) -> None:
    if args.loop < 1:
        raise UserError(f"-loop must be at least 1, got {args.loop}")
    if args.nb_frames is not None and args.nb_frames < 1:
        raise UserError(f"-nb_frames must be at least 1, got {args.nb_frames}")
    if args.ref_split is not None:
        check_ref_label(args.ref_split)


def progress_bar(total):
    from splitinfer.common.core.progress import bar

    return bar(total=total, unit="frame", desc="device")


# ----------------------------------------------------------------------------------------------
# the process


def run_device(args) -> int:
    """The UE process for parsed `splitinfer device` options; returns the exit code (see the docstring)."""
    check_options(args)
    model_path, family = resolve_anchor(args)
    source = Source(args)
    retry = None if args.no_split else retry_policy(args)  # option errors before anything slow
    codec = None
    if not args.no_split:
        from splitinfer.common.codecs import get_codec

        codec = get_codec(args.codec)
    tune_allocator()
    with StopSignals() as signals:
        if args.no_split:
            return AnchorOnlyRun(args, model_path, family, source, signals).run()
        return SplitRun(args, model_path, family, source, codec, retry, signals).run()


def resolve_anchor(args):
    """(model path, family) of -anchor through the one model resolver; sets args.model_id (--model-id, else the
    model's own id) and says which id is used and whether the weights are random."""
    from splitinfer.common.assets import default_model_path
    from splitinfer.common.core.models import model_id_of, random_weights_warning, resolve

    model = resolve(args.anchor or default_model_path(), None, "-anchor")
    family = family_for(model, args.family)
    if getattr(args, "threshold", None) is not None:
        family = ThresholdFamily(family, args.threshold)
    origin = "--model-id" if args.model_id else model_id_of(model.model_path, model.info)[1]
    args.model_id = args.model_id or model.model_id
    if not args.no_split:
        say(f"model id {args.model_id!r} (from {origin}; the server must hold it: `serve --models DIR`)")
    args.random_weights = random_weights_warning(model.model_path, model.info)
    if args.random_weights:
        say(args.random_weights, err=True)
    return model.model_path, family


class AnchorOnlyRun:
    """`-no_split`: the field's anchor-only mode (no server, no split)."""

    def __init__(self, args, model_path, family, source, signals):
        self.args, self.model_path, self.family, self.source, self.signals = args, model_path, family, source, signals
        self.outputs = Outputs(args)
        self.runs: OrderedDict[str, list] = OrderedDict()  # group -> [(device, seconds, detections)]

    def run(self) -> int:
        from splitinfer.device.reference import make_anchors

        anchors = make_anchors(self.args, self.model_path, self.family, say)
        if not anchors:
            raise UserError("-no_split with both anchors disabled leaves nothing to run")
        progress = progress_bar(self.source.total)
        stopped = None
        try:
            for name, k, img in self.source:
                self.infer(anchors, name, k, img)
                progress.update(1)
        except BaseException as exc:  # what ran so far is written, then the error
            stopped = exc
        finally:
            self.signals.interrupting = False
            progress.close()
        self.write_results(anchors)
        if stopped is not None:
            raise stopped
        return 0

    def infer(self, anchors, name, k, img) -> None:
        feeds, meta = self.family.preprocess(img)
        for dev, anchor in anchors.items():
            dets, seconds = anchor.infer(feeds, meta, self.family)
            self.runs.setdefault(self.source.group_of(name), []).append((dev, seconds, dets))
        if k == self.args.loop - 1:
            self.outputs.write_predictions(name, dets, img)

    def write_results(self, anchors) -> None:
        from splitinfer.device import results as R

        rows = [R.anchor_only_row(g, runs, loops=self.args.loop, model=self.args.model_id,
                                  devices=list(anchors), label_of=self.outputs.label_of)
                for g, runs in self.runs.items()]
        if rows:
            path = R.write_rows(self.outputs.results, rows)
            say(f"{sum(len(v) for v in self.runs.values())} anchor runs, results in {path}")


class GrpcTransport:
    """How a SplitRun reaches the network process over our protocol: its client and its frame pipeline
    (device/oip_client.py `OIPTransport` is the Open Inference Protocol's)."""

    name = "grpc"

    def connect(self, run):
        """A client of the network process, once it answers (waiting up to --reconnect-s)."""
        import os

        from splitinfer.common.transport import wire
        from splitinfer.common.transport.security import channel_credentials, resolve_token
        from splitinfer.common.transport.shaper import from_options as shaper_from_options
        from splitinfer.device.client import UEClient

        a, env = run.args, os.environ.get
        credentials = channel_credentials(a.tls_ca or env("SPLITINFER_TLS_CA"),
                                          a.tls_cert or env("SPLITINFER_TLS_CERT"),
                                          a.tls_key or env("SPLITINFER_TLS_KEY"))
        token = resolve_token(a.token)
        if token and credentials is None:
            say("warning: bearer token without TLS: it travels in clear (add --tls-ca)", err=True)
        client = UEClient(a.server, int(a.max_message_mb * wire.MIB),
                          shaper=shaper_from_options(a.shape_rate, a.shape_delay), credentials=credentials,
                          token=token, server_name=a.tls_server_name or env("SPLITINFER_TLS_SERVER_NAME") or None,
                          retry=run.retry)
        try:
            client.wait_ready(say=lambda text: say(text, err=True))
        except BaseException:
            client.close()
            raise
        return client

    def pipeline(self, run, client, metrics):
        from splitinfer.device.pipeline import FramePipeline

        a = run.args
        want = {"gpu": "cuda", "cpu": "cpu"}.get(a.pu_part2) if a.pu_part2 else None
        return FramePipeline(client, run.part1, run.family, run.codec, run.model_id, in_flight=a.in_flight,
                             unary=a.unary, keep_feeds=run.reference.needs_feeds, keep_image=run.outputs.overlays,
                             metrics=metrics, keep_intermediate=run.keeps_intermediate,
                             expect_server_provider=want, tolerate_failures=True)


class SplitRun:
    """The split system: Part I here, Part II in the network process, frames over `transport` (our gRPC
    protocol by default, GrpcTransport; or the Open Inference Protocol's, oip_client.OIPTransport)."""

    def __init__(self, args, model_path, family, source, codec, retry, signals, transport=None):
        self.args, self.model_path, self.family, self.source = args, model_path, family, source
        self.codec, self.retry, self.signals = codec, retry, signals
        self.transport = transport or GrpcTransport()
        self.outputs = Outputs(args)
        self.groups: OrderedDict[str, list] = OrderedDict()  # group -> FrameRecords
        self.frame_log = None

    # -- the run, step by step ------------------------------------------------------------------------

    def run(self) -> int:
        from splitinfer.common.transport.metrics import Metrics

        t_start = time.perf_counter()
        metrics = Metrics("device")
        if self.args.metrics_port is not None:
            say(f"metrics on :{metrics.serve(self.args.metrics_port)}")
        try:
            self.part1 = self.build_part1()
            self.reference = self.build_reference()
            client = self.transport.connect(self)
            try:
                pipeline = self.transport.pipeline(self, client, metrics)
                t_stream = time.perf_counter()
                stopped = self.process(pipeline)  # from here on every frame has ended: the rest completes
                streamed_s = time.perf_counter() - t_stream
                pipeline.close(cancel=stopped is not None or self.signals.requested.is_set())
            finally:
                client.close()
            code = self.write_results(pipeline, stopped, time.perf_counter() - t_start, streamed_s)
            self.linger()
        finally:
            metrics.close()
        if stopped is not None:
            raise stopped
        return code

    def process(self, pipeline) -> BaseException | None:
        """Every frame through the pipeline; on any stop the frames in flight end (failed) and what stopped
        the run is returned, to be raised once the results are written."""
        self.frame_log = self.open_frame_log()
        progress = progress_bar(self.source.total)
        try:
            for rec in pipeline.run(self.source, progress=progress):
                self.take(rec)
        except BaseException as exc:
            self.signals.interrupting = False  # a second signal must not cut the ending short
            for rec in pipeline.abandon(stop_reason(exc)):
                self.take(rec)
            return exc
        finally:
            self.signals.interrupting = False
            progress.close()
        return None

    def take(self, rec) -> None:
        """One ended frame: its log line first, then the references (device/reference.py), then its outputs;
        what only these needed (image, feeds, Part I's outputs) is freed."""
        image, rec.image = rec.image, None
        self.frame_log.write(rec)
        self.groups.setdefault(self.source.group_of(rec.source), []).append(rec)
        if not rec.ok:
            rec.feeds = rec.intermediate = None
            say(f"frame {rec.frame_id} ({rec.source} #{rec.index}) failed: {rec.error}", err=True)
            return
        ref_dets = self.reference.check(rec)
        last = rec.index == self.args.loop - 1
        if rec.intermediate is not None:
            self.save_intermediate(rec)
            rec.intermediate = None
        if ref_dets is not None and last:
            self.outputs.write_predictions(rec.source, ref_dets, image, folder=f"predictions_{self.args.ref_split}")
        if last:
            self.outputs.write_predictions(rec.source, rec.detections, image)

    # -- the steps --------------------------------------------------------------------------------------

    def build_part1(self):
        from splitinfer.device.part1 import Part1, check_family, parse_split

        rank, node = parse_split(self.args.split)
        part1 = Part1(self.model_path, rank=rank, name=node, flag=self.args.flag, device=self.args.pu_part1,
                      threads=self.args.threads, part1_path=self.args.part1, part2_path=self.args.part2,
                      check_model=not self.args.no_check_model)
        check_family(self.model_path, self.family, part1.input_names)
        return part1

    def build_reference(self):
        """The anchors and -ref_split (device/reference.py), built before the first frame."""
        from splitinfer.device.reference import Reference

        return Reference.for_run(self.args, self.model_path, self.family, self.part1, say=say)

    @property
    def keeps_intermediate(self) -> bool:
        """Records keep Part I's outputs: for --save-intermediate or -ref_split."""
        return bool(self.args.save_intermediate) or self.reference.needs_intermediate

    @property
    def model_id(self) -> str:
        return self.args.model_id

    def open_frame_log(self):
        from splitinfer.device.results import FrameLog, frames_path

        return FrameLog(frames_path(self.outputs.results))

    def save_intermediate(self, rec) -> None:
        if self.args.save_intermediate:
            self.outputs.save_intermediate(rec)

    def write_results(self, pipeline, stopped, seconds: float, streamed_s: float) -> int:
        """The results CSV (one row per source) and the summary line (`seconds` the whole run, `streamed_s` its
        frames: from the first frame read to the last answer); the exit code of a run that ran out."""
        from splitinfer.device import results as R

        if self.frame_log is not None:
            self.frame_log.close()
        plan, a = self.part1.plan, self.args
        nodes = f"rank={plan.rank};node={plan.node_name or 'end'};flag={a.flag}"
        rows = [R.summarize(recs, source=g, nodes=nodes, loops=a.loop, encoding_algo=a.codec,
                            ue_provider=self.part1.provider, model=self.model_id, rank=plan.rank,
                            label_of=self.outputs.label_of, ref_split=a.ref_split,
                            ref_agreements=[r.ref_agreement for r in recs if r.ref_agreement is not None])
                for g, recs in self.groups.items()]
        if not rows:
            if stopped is None:
                raise UserError(f"{self.source.path}: no frames processed")
            return 0
        path = R.write_rows(self.outputs.results, rows)
        n = sum(len(v) for v in self.groups.values())
        answered = [r.end_to_end_s for v in self.groups.values() for r in v if r.ok]
        e2e = f"{np.median(answered) * 1e3:.1f} ms" if answered else "-"
        rate = _sent_rate([r for v in self.groups.values() for r in v if r.ok], streamed_s)
        info = pipeline.info
        failed = self.frame_log.failed
        extra = f"; {failed} failed" if failed else ""
        extra += f"; reconnected {pipeline.reconnects} times" if pipeline.reconnects else ""
        say(f"{n} frames through {a.server} (model {self.model_id}, split {plan.rank}, "
            f"{len(plan.crossing)} crossing tensors, codec {a.codec}, Part II on {info.provider if info else '?'}); "
            f"median end-to-end {e2e}{rate}; {seconds:.1f} s{extra}; results in {path} "
            f"(per frame: {self.frame_log.path})")
        return 1 if failed else 0

    def linger(self) -> None:
        """--metrics-linger: keep serving metrics so Prometheus scrapes the final counts; a signal ends it."""
        if self.args.metrics_linger > 0 and self.args.metrics_port is not None:
            self.signals.requested.wait(self.args.metrics_linger)


def _sent_rate(answered: list, seconds: float) -> str:
    """"; sent K kB/frame, R kbit/s at the F frames/s achieved" over the answered frames (what the uplink
    carried), or "" without any."""
    if not answered or seconds <= 0:
        return ""
    kb = sum(r.encoded_bytes for r in answered) / len(answered) / 1e3
    fps = len(answered) / seconds
    return f"; sent {kb:,.1f} kB/frame, {kb * 8 * fps:,.0f} kbit/s at the {fps:.1f} frames/s achieved"


def main(argv=None) -> int:
    from splitinfer.common.cli import main as cli_main

    return cli_main(["device", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
