"""`splitinfer device`: the UE process's command-line plug-in (options, then device/main.py runs it).

Options follow the field's infer_onnx_multi.py (TR 26.847 Annex B.3: single-dash names, its long forms
`--input_source` and `--family`, processing units `CPU`/`GPU` in any case, `-ref_split LABEL`, part files
`-partI`/`-partII` that say where the cut is, `-results_filename` a path as given) plus the server address,
the split (a rank or a node name, with --flag) and the codec. What a run does, writes and how it stops:
device/main.py. Security: --tls-ca (server's CA) [--tls-cert --tls-key for mutual TLS], --token or
$SPLITINFER_TOKEN; the TLS files default to $SPLITINFER_TLS_CA, $SPLITINFER_TLS_CERT, $SPLITINFER_TLS_KEY
(as the deployment's health check reads them).
"""

NAME = "device"
HELP = "run the UE process against a network process (Part I + codec + gRPC)"
# output options (argparse dest -> "file" or "dir"), checked and prepared by the CLI before run()
OUTPUTS = {"results_dir": "dir", "results_filename": "file"}


def add_arguments(p):
    from splitinfer.common.cli import options as opt
    from splitinfer.common.codecs import codecs_help

    g = p.add_argument_group("field options (infer_onnx_multi.py)")
    g.add_argument("-s", "--input_source", dest="source", default=None,
                   help="image, video or folder of images (default: bundled photos)")
    g.add_argument("-loop", dest="loop", type=opt.POSITIVE_INT, default=1, help="inferences per image/frame (default 1)")
    g.add_argument("-partI", dest="part1", default=None,
                   help="Part I ONNX file (default: cut from -anchor); without --split the cut is read off it "
                        "(its split manifest, else its outputs)")
    g.add_argument("-partII", dest="part2", default=None, help="Part II ONNX file for -ref_split (default: cut)")
    g.add_argument("-anchor", dest="anchor", default=None, help="the whole model (default: bundled NanoDet)")
    g.add_argument("-f", "--family", dest="family", default=None,
                   help="model family (default: the model's metadata splitinfer.family, else model.json beside it)")
    g.add_argument("-results_filename", dest="results_filename", default=None,
                   help="path of the .csv results file, as given (default: results.csv in -results_dir); "
                        "its per-frame log <name>_frames.csv goes beside it")
    g.add_argument("-results_dir", dest="results_dir", default="results",
                   help="folder of the predictions and overlays (default: results)")
    g.add_argument("-no_CPU_anchor", dest="no_cpu_anchor", action="store_true", help="skip the whole model on CPU")
    g.add_argument("-no_GPU_anchor", dest="no_gpu_anchor", action="store_true", help="skip the whole model on GPU")
    g.add_argument("-ref_split", dest="ref_split", nargs="?", const="ref_split", default=None, metavar="LABEL",
                   help="reference split label: also run the split locally (no codec, no network), compare it "
                        "with the server (Equal_to_ref_split) and write its predictions to "
                        "-results_dir/predictions_LABEL/")
    g.add_argument("-no_split", dest="no_split", action="store_true",
                   help="no server: run only the whole model locally")
    g.add_argument("-no_check_model", dest="no_check_model", action="store_true", help="skip the ONNX checker")
    g.add_argument("-save_intermediate_data", dest="save_intermediate", action="store_true",
                   help="save each frame's Part I outputs as .npz under -results_dir/intermediate")
    g.add_argument("-nb_frames", dest="nb_frames", type=opt.POSITIVE_INT, default=None, help="process at most N frames")
    g.add_argument("-encode_algo", "--codec", dest="codec", default="none",
                   help=f"codec spec or numeric id (default none); every registered codec: {codecs_help()}")
    g.add_argument("-PU_partI", dest="pu_part1", type=str.lower, choices=("cpu", "gpu"), default="cpu",
                   metavar="{CPU,GPU}",
                   help="processing unit of Part I on the UE (CPU or GPU, any case)")
    g.add_argument("-PU_partII", dest="pu_part2", type=str.lower, choices=("cpu", "gpu"), default=None,
                   metavar="{CPU,GPU}",
                   help="required processing unit of Part II (checked against what the server reports)")
    g.add_argument("--threshold", type=opt.SCORE, default=None,
                   help="keep detections scored at or above this, here and on the server (default: the family's "
                        "display threshold; 0.05 for COCO-convention AP with `map`, as `sweep` uses)")
    g.add_argument("--labels_coco", dest="labels_coco", default=None,
                   help="coco_labels.csv (id,name) naming classes in the predictions")
    s = p.add_argument_group("split system")
    s.add_argument("--server", default="127.0.0.1:50051", help="network process host:port (default 127.0.0.1:50051)")
    s.add_argument("--protocol", choices=("grpc", "oip"), default="grpc",
                   help="grpc: our own stream (default); oip: Open Inference Protocol ModelInfer calls to any OIP "
                        "server (the network process, KServe, Triton...; codecs none or float16)")
    s.add_argument("--model-id", default=None, help="model id in the server's repository (default: the model's own: model.json \"id\", "
                        "metadata splitinfer.id, folder of <id>/model.onnx, else the file stem)")
    s.add_argument("--split", default=None, help="split rank (integer) or node name")
    s.add_argument("--flag", choices=("before", "after"), default="before",
                   help="with a node: it starts Part II (before) or ends Part I (after)")
    s.add_argument("--in-flight", type=opt.POSITIVE_INT, default=1, help="frames in flight on the stream (1: wait for each reply)")
    s.add_argument("--unary", action="store_true", help="one unary call per frame instead of the stream")
    s.add_argument("--max-message-mb", type=opt.MESSAGE_MB, default=4.0, help="gRPC message limit in MiB (default 4)")
    s.add_argument("--threads", type=opt.THREADS, default=None, help="intra-op threads of Part I and the anchors")
    s.add_argument("--metrics-port", type=opt.PORT, default=None, help="serve Prometheus metrics on this port (0: free)")
    s.add_argument("--no-overlay", action="store_true", help="do not write overlay images")
    s.add_argument("--shape-rate", default=None, metavar="RATE",
                   help="emulate an uplink of this rate in-process (e.g. 50mbit), where tc is not allowed")
    s.add_argument("--shape-delay", default=None, metavar="DELAY",
                   help="emulated one-way uplink delay in-process (e.g. 20ms)")
    s.add_argument("--metrics-linger", type=opt.SECONDS, default=0.0, metavar="S",
                   help="keep serving metrics S seconds after the run, so Prometheus scrapes the final counts")
    r = p.add_argument_group("reliability and security")
    r.add_argument("--timeout", type=opt.POSITIVE_FLOAT, default=120.0, metavar="S",
                   help="deadline of each frame's reply in seconds (default 120)")
    r.add_argument("--reconnect-s", type=opt.SECONDS, default=60.0, metavar="S",
                   help="wait this long for an absent server at start, and keep reconnecting to a vanished one "
                        "this long before its frames fail (default 60)")
    r.add_argument("--max-attempts", type=opt.POSITIVE_INT, default=3,
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


def run(args) -> int:
    if args.protocol == "oip":
        from splitinfer.device.oip_client import run_oip_device

        return run_oip_device(args)
    from splitinfer.device.main import run_device

    return run_device(args)
