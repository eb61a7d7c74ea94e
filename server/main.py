"""Entry point of the network process: gRPC server + health + reflection + metrics, graceful shutdown.

`splitinfer serve` calls `serve()`; `python -m splitinfer.server.main` does the same without the CLI.
The first line printed on stdout says where it listens (tests and the demo read the ports from it when
they ask for port 0).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from concurrent import futures

from splitinfer.common.errors import UserError

READY_PREFIX = "splitinfer serve: listening on"


def build_server(repository, metrics, host: str, port: int, max_message_bytes: int, max_workers: int = 16,
                 max_frame_bytes: int | None = None):
    """A started gRPC server with the split-inference service, health checking and reflection."""
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection

    from splitinfer.common import wire
    from splitinfer.server.service import SERVICE_NAME, SplitInferenceService

    service = SplitInferenceService(repository, metrics, max_message_bytes,
                                    max_frame_bytes or wire.DEFAULT_MAX_FRAME_BYTES)
    options = [
        ("grpc.max_receive_message_length", max_message_bytes + 4096),  # headers ride on top of the chunks
        ("grpc.max_send_message_length", max_message_bytes + 4096),
        ("grpc.so_reuseport", 0),
    ]
    # Each open stream holds a worker for its lifetime; beyond max_workers clients get RESOURCE_EXHAUSTED.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
                         options=options, maximum_concurrent_rpcs=max_workers,
                         compression=grpc.Compression.NoCompression)
    server.add_generic_rpc_handlers((service.handler(),))
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc}") from None
    if not bound:
        raise UserError(f"cannot listen on {host}:{port} (port in use or address not available)")
    server.start()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, bound, health_servicer, service


def serve(models, port: int = 50051, metrics_port: int = 9101, host: str = "0.0.0.0", device: str = "auto",
          require_gpu: bool = False, threads: int | None = None, max_message_mb: float = 4.0,
          max_workers: int = 16, cache_size: int = 16, grace_s: float = 5.0) -> int:
    """Run the network process until SIGTERM/SIGINT; in-flight calls get `grace_s` seconds to finish."""
    from splitinfer.common import wire
    from splitinfer.common.metrics import Metrics
    from splitinfer.server.model_repository import ModelRepository

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if max_message_mb <= 0:
        raise UserError(f"--max-message-mb must be positive, got {max_message_mb}")
    if max_workers < 1:
        raise UserError(f"--max-workers must be at least 1, got {max_workers}")
    wire.tune_allocator()
    repo = ModelRepository(models, device=device, threads=threads, require_gpu=require_gpu, cache_size=cache_size)
    providers = repo.check_gpu() if (require_gpu or device == "gpu") else None
    metrics = Metrics("server")
    mport = metrics.serve(metrics_port, host)
    max_message_bytes = int(max_message_mb * wire.MIB)
    server, bound, health_servicer, _ = build_server(repo, metrics, host, port, max_message_bytes, max_workers)

    stop = threading.Event()

    def on_signal(signum, _frame):
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    print(f"{READY_PREFIX} {host}:{bound} metrics {mport} models {','.join(repo.ids())} "
          f"device {device}{' providers ' + ','.join(providers) if providers else ''}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        health_servicer.enter_graceful_shutdown()
        server.stop(grace_s).wait()
        metrics.close()
        for s, h in previous.items():
            signal.signal(s, h)
    print("splitinfer serve: stopped", flush=True)
    return 0


def main(argv=None) -> int:
    from splitinfer.common.cli import main as cli_main

    return cli_main(["serve", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
