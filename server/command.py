"""Run the network process: a gRPC server that runs Part II of split models for UE processes.

Models come from a repository folder (`DIR/<model_id>/model.onnx` + `model.json`); clients name
model ids only. Part II runs on CUDA when onnxruntime can really use it, on CPU otherwise;
`--require-gpu` refuses to start unless CUDA really runs. Health checking and reflection are on;
SIGTERM/SIGINT stop it gracefully. Prometheus metrics are served on --metrics-port.

Security: `--tls-cert/--tls-key` serve TLS; `--tls-client-ca` also requires client certificates signed by
that CA (mutual TLS); `--token` (or $SPLITINFER_TOKEN) requires `authorization: Bearer <token>` on every
call but health checks. Limits: `--max-message-mb` per message, `--max-streams` concurrent streams,
`--stream-idle-s` silence on a stream before it is cancelled, `--work-slots`/`--queue`/`--queue-wait-s`
admission of decoding and Part II work, `--cache-size`/`--cache-mb` kept Part II models.
"""

NAME = "serve"
HELP = "run the network process (gRPC server for Part II)"


def add_arguments(p):
    from splitinfer.common.cli import options as opt

    p.add_argument("--models", default=None, metavar="DIR",
                   help="model repository folder (default: the bundled one)")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=opt.PORT, default=50051, help="gRPC port (0: a free port; default 50051)")
    p.add_argument("--metrics-port", type=opt.PORT, default=9101,
                   help="Prometheus metrics port (0: a free port; default 9101, clear of node_exporter's 9100)")
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                   help="where Part II runs (auto: CUDA when really usable)")
    p.add_argument("--require-gpu", action="store_true", help="fail unless CUDA really runs Part II")
    p.add_argument("--threads", type=opt.THREADS, default=None,
                   help="intra-op threads of Part II (default: onnxruntime's; pin it when the UE shares the cores)")
    p.add_argument("--max-message-mb", type=opt.MESSAGE_MB, default=4.0,
                   help="largest gRPC message in MiB; bigger tensors arrive in chunks (default 4)")
    p.add_argument("--max-streams", type=opt.POSITIVE_INT, default=16,
                   help="concurrent streams (UE sessions); more get RESOURCE_EXHAUSTED (default 16)")
    p.add_argument("--max-workers", type=opt.POSITIVE_INT, default=None,
                   help="threads for all calls at once, streams included (default: max-streams + 64)")
    p.add_argument("--work-slots", type=opt.POSITIVE_INT, default=None,
                   help="calls that decode / run Part II at once (default: the CPUs this process may use, >= 2)")
    p.add_argument("--queue", type=opt.COUNT, default=None,
                   help="calls that may wait for a work slot; more get UNAVAILABLE at once "
                        "(default: max-streams + 4 x work slots)")
    p.add_argument("--queue-wait-s", type=opt.SECONDS, default=5.0,
                   help="longest wait for a work slot before UNAVAILABLE (default 5)")
    p.add_argument("--stream-idle-s", type=opt.SECONDS, default=600.0,
                   help="cancel a stream that sent nothing for this many seconds (0: never; default 600)")
    p.add_argument("--tls-cert", metavar="PEM", default=None, help="server certificate (chain): serve TLS")
    p.add_argument("--tls-key", metavar="PEM", default=None, help="private key of --tls-cert")
    p.add_argument("--tls-client-ca", metavar="PEM", default=None,
                   help="require client certificates signed by this CA (mutual TLS)")
    p.add_argument("--token", default=None,
                   help="require this bearer token on every call (default: $SPLITINFER_TOKEN when set)")
    p.add_argument("--cache-size", type=opt.POSITIVE_INT, default=16, help="Part II models kept, at most (one per model and split)")
    p.add_argument("--cache-mb", type=opt.POSITIVE_FLOAT, default=512.0,
                   help="estimated memory the kept Part II models may hold (default 512)")


def run(args) -> int:
    from splitinfer.common.assets import MODELS_DIR
    from splitinfer.server.main import serve

    return serve(args.models or MODELS_DIR, port=args.port, metrics_port=args.metrics_port, host=args.host,
                 device=args.device, require_gpu=args.require_gpu, threads=args.threads,
                 max_message_mb=args.max_message_mb, max_workers=args.max_workers, cache_size=args.cache_size,
                 max_streams=args.max_streams, stream_idle_s=args.stream_idle_s, tls_cert=args.tls_cert,
                 tls_key=args.tls_key, tls_client_ca=args.tls_client_ca, token=args.token, cache_mb=args.cache_mb,
                 work_slots=args.work_slots, queue=args.queue, queue_wait_s=args.queue_wait_s)
