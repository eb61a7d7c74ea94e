"""Run the UE process: Part I locally, encode, stream to a network process, write results.

Options follow the field's infer_onnx_multi.py (single-dash names kept) plus the server address, the
split (a rank or a node name, with --flag) and the codec. For every frame of the source: preprocess,
Part I, encode the crossing tensors (and Part I's final outputs), send them on a gRPC stream, receive the
detections; optionally run the whole model locally (the anchor) and the split locally (-ref_split) for
reference. Writes the results CSV (the field's columns + ours, one row per image or video), one
predictions file per image/frame and overlay images under -results_dir.

Reliability: each frame's end is logged at once in `<results>_frames.csv` (ok / failed, attempts, error).
When the network process goes away the UE reconnects with backoff (for up to --reconnect-s) and sends the
unanswered frames again; a frame the server refuses, or that meets --max-attempts transient failures, is
reported failed (exit code 1 when any failed). Ctrl-C or SIGTERM, an unreadable image halfway through a
folder or a server gone for good: the results of the frames that ended are written before exiting (130,
2). Security: --tls-ca (server's CA) [--tls-cert --tls-key for mutual TLS], --token or $SPLITINFER_TOKEN;
the TLS files default to $SPLITINFER_TLS_CA, $SPLITINFER_TLS_CERT, $SPLITINFER_TLS_KEY (as the deployment's
health check reads them).
"""

NAME = "device"
HELP = "run the UE process against a network process (Part I + codec + gRPC)"


def add_arguments(p):
    g = p.add_argument_group("field options (infer_onnx_multi.py)")
    g.add_argument("-s", dest="source", default=None, help="image, video or folder of images (default: bundled photos)")
    g.add_argument("-loop", dest="loop", type=int, default=1, help="inferences per image/frame (default 1)")
    g.add_argument("-partI", dest="part1", default=None, help="Part I ONNX file (default: cut from -anchor)")
    g.add_argument("-partII", dest="part2", default=None, help="Part II ONNX file for -ref_split (default: cut)")
    g.add_argument("-anchor", dest="anchor", default=None, help="the whole model (default: bundled NanoDet)")
    g.add_argument("-f", dest="family", default=None, help="model family (default: from model.json beside the model)")
    g.add_argument("-results_filename", dest="results_filename", default="results.csv")
    g.add_argument("-results_dir", dest="results_dir", default="results")
    g.add_argument("-no_CPU_anchor", dest="no_cpu_anchor", action="store_true", help="skip the whole model on CPU")
    g.add_argument("-no_GPU_anchor", dest="no_gpu_anchor", action="store_true", help="skip the whole model on GPU")
    g.add_argument("-ref_split", dest="ref_split", action="store_true",
                   help="also run the split locally (no codec, no network) and compare with the server")
    g.add_argument("-no_split", dest="no_split", action="store_true",
                   help="no server: run only the whole model locally")
    g.add_argument("-no_check_model", dest="no_check_model", action="store_true", help="skip the ONNX checker")
    g.add_argument("-save_intermediate_data", dest="save_intermediate", action="store_true",
                   help="save each frame's Part I outputs as .npz under -results_dir/intermediate")
    g.add_argument("-nb_frames", dest="nb_frames", type=int, default=None, help="process at most N frames")
    g.add_argument("-encode_algo", "--codec", dest="codec", default="none",
                   help="codec: none, float16, zstd, nnc:QP or a numeric id (0, 1, 838 = NNC QP -38)")
    g.add_argument("-PU_partI", dest="pu_part1", choices=("cpu", "gpu"), default="cpu",
                   help="processing unit of Part I on the UE")
    g.add_argument("-PU_partII", dest="pu_part2", choices=("cpu", "gpu"), default=None,
                   help="required processing unit of Part II (checked against what the server reports)")
    g.add_argument("--labels_coco", dest="labels_coco", default=None,
                   help="coco_labels.csv (id,name) naming classes in the predictions")
    s = p.add_argument_group("split system")
    s.add_argument("--server", default="127.0.0.1:50051", help="network process host:port (default 127.0.0.1:50051)")
    s.add_argument("--model-id", default=None, help="model id in the server's repository (default: model folder name)")
    s.add_argument("--split", default=None, help="split rank (integer) or node name")
    s.add_argument("--flag", choices=("before", "after"), default="before",
                   help="with a node: it starts Part II (before) or ends Part I (after)")
    s.add_argument("--in-flight", type=int, default=1, help="frames in flight on the stream (1: wait for each reply)")
    s.add_argument("--unary", action="store_true", help="one unary call per frame instead of the stream")
    s.add_argument("--max-message-mb", type=float, default=4.0, help="gRPC message limit in MiB (default 4)")
    s.add_argument("--threads", type=int, default=None, help="intra-op threads of Part I and the anchors")
    s.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus metrics on this port (0: free)")
    s.add_argument("--no-overlay", action="store_true", help="do not write overlay images")
    s.add_argument("--shape-rate", default=None, metavar="RATE",
                   help="emulate an uplink of this rate in-process (e.g. 50mbit), where tc is not allowed")
    s.add_argument("--shape-delay", default=None, metavar="DELAY",
                   help="emulated one-way uplink delay in-process (e.g. 20ms)")
    s.add_argument("--metrics-linger", type=float, default=0.0, metavar="S",
                   help="keep serving metrics S seconds after the run, so Prometheus scrapes the final counts")
    r = p.add_argument_group("reliability and security")
    r.add_argument("--timeout", type=float, default=120.0, metavar="S",
                   help="deadline of each frame's reply in seconds (default 120)")
    r.add_argument("--reconnect-s", type=float, default=60.0, metavar="S",
                   help="keep reconnecting to a vanished server this long before its frames fail (default 60)")
    r.add_argument("--max-attempts", type=int, default=3,
                   help="transient failures (server lost, deadline) one frame may meet before it fails (default 3)")
    r.add_argument("--tls-ca", metavar="PEM", default=None,
                   help="connect with TLS, trusting this CA for the server certificate ($SPLITINFER_TLS_CA)")
    r.add_argument("--tls-cert", metavar="PEM", default=None,
                   help="client certificate for mutual TLS ($SPLITINFER_TLS_CERT)")
    r.add_argument("--tls-key", metavar="PEM", default=None, help="key of --tls-cert ($SPLITINFER_TLS_KEY)")
    r.add_argument("--tls-server-name", default=None,
                   help="name in the server certificate when it differs from the --server host "
                        "($SPLITINFER_TLS_SERVER_NAME)")
    r.add_argument("--token", default=None, help="bearer token for the server (default: $SPLITINFER_TOKEN)")


def _label_mapper(path):
    """Detection names -> the names of a coco_labels.csv (its ids are COCO-80 indices or category ids)."""
    from splitinfer.common.core.labels import COCO80_NAMES, NAME_TO_CATEGORY_ID, read_labels_csv

    table = read_labels_csv(path)
    by_category = max(table) >= len(COCO80_NAMES)
    index = NAME_TO_CATEGORY_ID if by_category else {n: i for i, n in enumerate(COCO80_NAMES)}

    def label_of(name: str) -> str:
        key = index.get(name)
        return table.get(key, name) if key is not None else name

    return label_of


def _family_for(model_path, name):
    import json

    from splitinfer.common.core.errors import UserError
    from splitinfer.common.families import get_family

    if name:
        return get_family(name)
    meta = model_path.parent / "model.json"
    if meta.is_file():
        try:
            return get_family(json.loads(meta.read_text())["family"])
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{meta}: no \"family\" entry; give -f FAMILY") from None
    raise UserError(f"no model.json beside {model_path}: give the family with -f")


def run(args) -> int:
    import sys
    import time
    from collections import OrderedDict
    from pathlib import Path

    import numpy as np

    from splitinfer.common.transport import wire
    from splitinfer.common.assets import IMAGES_DIR, default_model_path
    from splitinfer.common.codecs import get_codec
    from splitinfer.common.core.detections import write_predictions
    from splitinfer.common.core.errors import UserError, require_file
    from splitinfer.common.core.images import frame_count, is_video, iter_frames, write_image
    from splitinfer.common.transport.metrics import Metrics
    from splitinfer.common.core.runtime import available_providers, CUDA
    from splitinfer.device import results as R
    from splitinfer.device.ue import UE, Anchor, PartI, UEClient, compare_detections

    if args.loop < 1:
        raise UserError(f"-loop must be at least 1, got {args.loop}")
    if args.nb_frames is not None and args.nb_frames < 1:
        raise UserError(f"-nb_frames must be at least 1, got {args.nb_frames}")
    model_path = require_file(args.anchor, "model") if args.anchor else default_model_path()
    family = _family_for(Path(model_path), args.family)
    source = Path(args.source) if args.source else IMAGES_DIR
    out_dir = Path(args.results_dir)
    if not source.exists():  # checked before anything slow (sessions, connection)
        raise UserError(f"source not found: {source}")
    if not args.no_split and args.split is None:
        raise UserError("give the split with --split RANK or --split NODE_NAME (or -no_split)")
    codec = None if args.no_split else get_codec(args.codec)
    credentials = token = server_name = retry = None
    if not args.no_split:
        import os

        from splitinfer.common.transport.security import channel_credentials, resolve_token
        from splitinfer.device.ue import RetryPolicy

        env = os.environ.get
        credentials = channel_credentials(args.tls_ca or env("SPLITINFER_TLS_CA"),
                                          args.tls_cert or env("SPLITINFER_TLS_CERT"),
                                          args.tls_key or env("SPLITINFER_TLS_KEY"))
        server_name = args.tls_server_name or env("SPLITINFER_TLS_SERVER_NAME") or None
        token = resolve_token(args.token)
        if token and credentials is None:
            print("splitinfer device: warning: bearer token without TLS: it travels in clear (add --tls-ca)",
                  file=sys.stderr, flush=True)
        if args.timeout <= 0 or args.reconnect_s < 0 or args.max_attempts < 1:
            raise UserError("--timeout must be positive, --reconnect-s not negative, --max-attempts at least 1")
        retry = RetryPolicy(reconnect_s=args.reconnect_s, max_attempts=args.max_attempts,
                            frame_timeout_s=args.timeout, setup_timeout_s=max(args.timeout, 180.0))
    label_of = _label_mapper(args.labels_coco) if args.labels_coco else None
    wire.tune_allocator()
    metrics = Metrics("device")
    if args.metrics_port is not None:
        print(f"splitinfer device: metrics on :{metrics.serve(args.metrics_port)}", flush=True)

    anchors = {}
    if not args.no_cpu_anchor:
        anchors["cpu"] = Anchor(model_path, "cpu", threads=args.threads)
    if not args.no_gpu_anchor and CUDA in available_providers():
        anchors["gpu"] = Anchor(model_path, "gpu", threads=args.threads)
    elif not args.no_gpu_anchor:
        print("splitinfer device: no usable CUDA here, GPU anchor skipped", flush=True)
    for anchor in anchors.values():
        _check_family(model_path, family, anchor.session.input_names)

    total = frame_count(source)
    if total is not None and args.nb_frames:
        total = min(total, args.nb_frames)
    groups: OrderedDict[str, list] = OrderedDict()
    video = source.is_file() and is_video(source)

    def frames():
        for name, img in iter_frames(source, args.nb_frames):
            for k in range(args.loop):
                yield name, k, img

    def group_of(name):
        return source.name if video else name

    def write_outputs(name, dets, image):
        shown = dets if label_of is None else [type(d)(label_of(d.label), *d.box, d.score) for d in dets]
        write_predictions(out_dir / "predictions" / f"{name}.txt", shown)
        if not args.no_overlay:
            from splitinfer.common.eval.overlay import draw_detections

            write_image(out_dir / "overlays" / f"{name}.jpg", draw_detections(image, shown))

    from tqdm import tqdm

    progress = tqdm(total=(total * args.loop) if total else None, unit="frame", desc="device", disable=None)
    t_start = time.perf_counter()
    if args.no_split:  # the field's anchor-only mode: no server, no split
        if not anchors:
            raise UserError("-no_split with both anchors disabled leaves nothing to run")
        rows, last = [], {}
        stopped = None
        try:
            with _sigterm_as_interrupt():
                for name, k, img in frames():
                    feeds, meta = family.preprocess(img)
                    for dev, anchor in anchors.items():
                        t0 = time.perf_counter()
                        out = anchor.run(feeds)
                        groups.setdefault(group_of(name), []).append((dev, time.perf_counter() - t0))
                        dets = family.postprocess(out, meta)
                    last[group_of(name)] = dets
                    if k == args.loop - 1:
                        write_outputs(name, dets, img)
                    progress.update(1)
        except (KeyboardInterrupt, UserError) as exc:  # what ran so far is written, then the error
            stopped = exc
        finally:
            progress.close()
        for g, times in groups.items():
            row = {c: "" for c in R.COLUMNS}
            row.update({"Source": g, "Nodes": "whole model", "Inference_loop": args.loop,
                        "nb_inference": sum(1 for d, _ in times if d == next(iter(anchors))),
                        "encoding_algo": "", "Model": Path(model_path).parent.name,
                        "predictions_size": len(last.get(g, [])),
                        "predictions": R.predictions_cell(last.get(g, []), label_of)})
            for dev in anchors:
                ts = [t for d, t in times if d == dev]
                row[f"UE_inference_time_{dev.upper()}"] = R.avg_std(ts)
                row[f"UE_inference_time_{dev.upper()}_steady_state"] = R.avg_std(R.steady(ts))
            rows.append(row)
        if rows:
            path = R.write_rows(out_dir / args.results_filename, rows)
            print(f"splitinfer device: {sum(len(v) for v in groups.values())} anchor runs, results in {path}",
                  flush=True)
        if stopped is not None:
            raise stopped
        return 0

    split = args.split.strip()
    rank, node = (int(split), None) if split.lstrip("-").isdigit() else (None, split)
    part1 = PartI(model_path, rank=rank, name=node, flag=args.flag, device=args.pu_part1, threads=args.threads,
                  part1_path=args.part1, check_model=not args.no_check_model)
    plan = part1.plan
    initializers = {i.name for i in part1.model.graph.initializer}
    _check_family(model_path, family, [i.name for i in part1.model.graph.input if i.name not in initializers])
    model_id = args.model_id or Path(model_path).parent.name
    ref = None
    if args.ref_split and not plan.part2_identity:
        from splitinfer.common.core.onnx_io import load_model
        from splitinfer.common.core.runtime import make_session

        p2 = load_model(args.part2) if args.part2 else part1.graph.extract(plan)[1]
        ref = make_session(p2, device=args.pu_part1, threads=args.threads)
    from splitinfer.common.transport.shaper import from_options as shaper_from_options

    client = UEClient(args.server, int(args.max_message_mb * wire.MIB),
                      shaper=shaper_from_options(args.shape_rate, args.shape_delay), credentials=credentials,
                      token=token, server_name=server_name, retry=retry)
    client.wait_ready(timeout=30)
    want = {"gpu": "cuda", "cpu": "cpu"}.get(args.pu_part2) if args.pu_part2 else None
    ue = UE(client, part1, family, codec, model_id, in_flight=args.in_flight, unary=args.unary, anchors=anchors,
            metrics=metrics, keep_intermediate=args.save_intermediate or ref is not None,
            expect_server_provider=want, tolerate_failures=True)
    images: dict[tuple, np.ndarray] = {}
    ref_equal: dict[str, list[bool]] = {}

    def feed():
        for name, k, img in frames():
            images[(name, k)] = img
            yield name, k, img

    frame_log = R.FrameLog(R.frames_path(out_dir / args.results_filename))

    def handle(rec):
        img = images.pop((rec.source, rec.index), None)
        frame_log.write(rec)
        groups.setdefault(group_of(rec.source), []).append(rec)
        if not rec.ok:
            print(f"splitinfer device: frame {rec.frame_id} ({rec.source} #{rec.index}) failed: {rec.error}",
                  file=sys.stderr, flush=True)
            return
        if rec.intermediate is not None:
            if args.save_intermediate:
                path = out_dir / "intermediate" / f"{rec.source}_loop{rec.index}.npz"
                path.parent.mkdir(parents=True, exist_ok=True)
                np.savez(path, **{f"t{i}": a for i, a in enumerate(rec.intermediate.values())},
                         names=np.array(list(rec.intermediate)))
            if ref is not None:
                from splitinfer.common.split.graph import consolidate

                out2 = dict(zip(ref.output_names, ref.run({n: rec.intermediate[n] for n in plan.part2_inputs})))
                outs = dict(zip([n for n, _ in plan.consolidation], consolidate(plan, rec.intermediate, out2)))
                _, meta = family.preprocess(img)
                ref_equal.setdefault(group_of(rec.source), []).append(
                    compare_detections(family.postprocess(outs, meta), rec.detections).equal)
        rec.intermediate = None
        if rec.index == args.loop - 1:
            write_outputs(rec.source, rec.detections, img)

    stopped = None
    try:
        with _sigterm_as_interrupt():
            try:
                for rec in ue.run(feed(), progress=progress):
                    handle(rec)
            except (KeyboardInterrupt, UserError) as exc:  # the frames in flight end as failed; results written
                stopped = exc
                reason = "interrupted (Ctrl-C / SIGTERM)" if isinstance(exc, KeyboardInterrupt) else f"stopped: {exc}"
                for rec in ue.abandon(reason):
                    handle(rec)
    finally:
        frame_log.close()
        ue.close(cancel=stopped is not None)
        client.close()
        progress.close()
        if args.metrics_linger > 0 and args.metrics_port is not None:
            time.sleep(args.metrics_linger)
        metrics.close()
    nodes = f"rank={plan.rank};node={plan.node_name or 'end'};flag={args.flag}"
    rows = []
    for g, recs in groups.items():
        row = R.summarize(recs, source=g, nodes=nodes, loops=args.loop, encoding_algo=args.codec,
                          ue_provider=part1.provider, model=model_id, rank=plan.rank, label_of=label_of)
        if g in ref_equal:
            row["Equal_to_ref_split"] = "yes" if all(ref_equal[g]) else "no"
        rows.append(row)
    if not rows:
        if stopped is not None:
            raise stopped
        raise UserError(f"{source}: no frames processed")
    path = R.write_rows(out_dir / args.results_filename, rows)
    n = sum(len(v) for v in groups.values())
    answered = [r.end_to_end_s for v in groups.values() for r in v if r.ok]
    e2e = f"{np.median(answered) * 1e3:.1f} ms" if answered else "-"
    info = ue.info
    extra = f"; {frame_log.failed} failed" if frame_log.failed else ""
    extra += f"; reconnected {ue.reconnects} times" if ue.reconnects else ""
    print(f"splitinfer device: {n} frames through {args.server} (model {model_id}, split {plan.rank}, "
          f"{len(plan.crossing)} crossing tensors, codec {args.codec}, Part II on {info.provider if info else '?'}); "
          f"median end-to-end {e2e}; {time.perf_counter() - t_start:.1f} s{extra}; results in {path} "
          f"(per frame: {frame_log.path})", flush=True)
    if stopped is not None:
        raise stopped
    return 1 if frame_log.failed else 0


def _check_family(model_path, family, input_names) -> None:
    """The family's preprocessing must feed the model's inputs (else onnxruntime fails on the first frame)."""
    from splitinfer.common.core.errors import UserError

    missing = [n for n in family.input_names if n not in input_names]
    if missing:
        raise UserError(f"{model_path}: inputs {list(input_names)} do not match family {family.name} "
                        f"(expects {list(family.input_names)}; give the right one with -f)")


class _sigterm_as_interrupt:
    """SIGTERM behaves like Ctrl-C inside (results so far get written); a no-op outside the main thread."""

    def __enter__(self):
        import signal

        def handler(signum, frame):
            raise KeyboardInterrupt

        try:
            self._previous = signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread
            self._previous = None
        return self

    def __exit__(self, *exc):
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        return False
