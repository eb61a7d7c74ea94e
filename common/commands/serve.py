"""Run the network process: a gRPC server that runs Part II of split models for UE processes.

Models come from a repository folder (`DIR/<model_id>/model.onnx` + `model.json`); clients name
model ids only. Part II runs on CUDA when onnxruntime can really use it, on CPU otherwise;
`--require-gpu` refuses to start unless CUDA really runs. Health checking and reflection are on;
SIGTERM/SIGINT stop it gracefully. Prometheus metrics are served on --metrics-port.
"""

NAME = "serve"
HELP = "run the network process (gRPC server for Part II)"


def add_arguments(p):
    p.add_argument("--models", default=None, metavar="DIR",
                   help="model repository folder (default: the bundled one)")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=50051, help="gRPC port (0: a free port; default 50051)")
    p.add_argument("--metrics-port", type=int, default=9101,
                   help="Prometheus metrics port (0: a free port; default 9101, clear of node_exporter's 9100)")
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                   help="where Part II runs (auto: CUDA when really usable)")
    p.add_argument("--require-gpu", action="store_true", help="fail unless CUDA really runs Part II")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads of Part II (default: onnxruntime's; pin it when the UE shares the cores)")
    p.add_argument("--max-message-mb", type=float, default=4.0,
                   help="largest gRPC message in MiB; bigger tensors arrive in chunks (default 4)")
    p.add_argument("--max-workers", type=int, default=16,
                   help="concurrent calls (each open stream holds one; default 16)")
    p.add_argument("--cache-size", type=int, default=16, help="Part II models kept per (model, split)")


def run(args) -> int:
    from splitinfer.common.assets import MODELS_DIR
    from splitinfer.server.main import serve

    return serve(args.models or MODELS_DIR, port=args.port, metrics_port=args.metrics_port, host=args.host,
                 device=args.device, require_gpu=args.require_gpu, threads=args.threads,
                 max_message_mb=args.max_message_mb, max_workers=args.max_workers, cache_size=args.cache_size)
