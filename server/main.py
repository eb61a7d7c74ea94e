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

from splitinfer.common.core.allocator import tune_allocator
from splitinfer.common.core.errors import UserError

from splitinfer.common.transport.ready import READY_PREFIX


# Keepalive: the server pings a silent client every 30 s and drops it after 10 s without an answer (a
# vanished UE frees its stream); clients may ping as often as every 10 s (the UE pings every 20 s).
KEEPALIVE_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.keepalive_permit_without_calls", 1),
]
# Threads beyond the streams: unary calls, health checks, listing, refusals. gRPC gets no concurrency limit
# (past it, it refuses health checks too); calls are cheap until they ask admission.py for a work slot,
# and a call waits there at most `queue_wait_s`, so these threads free up fast under any flood.
EXTRA_WORKERS = 64


def default_work_slots() -> int:
    import os

    return max(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2))


def build_server(repository, metrics, host: str, port: int, max_message_bytes: int, max_workers: int | None = None,
                 max_frame_bytes: int | None = None, *, max_streams: int = 16, credentials=None,
                 token: str | None = None, stream_idle_s: float | None = None, work_slots: int | None = None,
                 queue: int | None = None, queue_wait_s: float = 5.0):
    """A started gRPC server with the split-inference service, health checking and reflection.

    `credentials`: grpc server credentials (TLS / mutual TLS, see common/transport/security.py), None for plain TCP.
    `token`: bearer token every call but health checks must carry (checked by an interceptor, which gRPC
    runs before a handler or its request is touched). `max_streams`: concurrent streams (more get
    RESOURCE_EXHAUSTED); `max_workers`: threads for all calls (default max_streams + 64); `work_slots`
    calls decode / run Part II at once, `queue` more (default max_streams + 4 x slots) wait up to
    `queue_wait_s`, then get UNAVAILABLE (admission.py).
    """
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection

    from splitinfer.common.transport import wire
    from splitinfer.common.transport.security import token_interceptor
    from splitinfer.server.admission import Admission
    from splitinfer.server.service import SERVICE_NAME, SplitInferenceService

    slots = work_slots or default_work_slots()
    admission = Admission(slots, max_streams + 4 * slots if queue is None else queue, queue_wait_s)
    service = SplitInferenceService(repository, metrics, max_message_bytes,
                                    max_frame_bytes or wire.DEFAULT_MAX_FRAME_BYTES, max_streams=max_streams,
                                    stream_idle_s=stream_idle_s, admission=admission)
    options = [
        ("grpc.max_receive_message_length", max_message_bytes + 4096),  # headers ride on top of the chunks
        ("grpc.max_send_message_length", max_message_bytes + 4096),
        ("grpc.so_reuseport", 0),
        *KEEPALIVE_OPTIONS,
    ]
    workers = max_workers or (max_streams + EXTRA_WORKERS)
    interceptors = [token_interceptor(token, on_refuse=lambda: metrics.count_error("UNAUTHENTICATED"))] if token else []
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rpc"),
                         options=options, interceptors=interceptors, compression=grpc.Compression.NoCompression)
    server.add_generic_rpc_handlers((service.handler(),))
    from splitinfer.server.oip import add_oip_service  # the Open Inference Protocol beside our own service

    oip_name = add_oip_service(server, repository, metrics, max_frame_bytes or wire.DEFAULT_MAX_FRAME_BYTES,
                               admission=admission, max_reply_bytes=max_message_bytes)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, oip_name, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server)
    address = f"{host}:{port}"
    try:
        bound = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    except RuntimeError as exc:
        raise UserError(f"cannot listen on {address}: {exc}") from None
    if not bound:
        raise UserError(f"cannot listen on {address} (port in use or address not available)")
    server.start()
    for name in ("", SERVICE_NAME, oip_name):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, bound, health_servicer, service


def serve(models, port: int = 50051, metrics_port: int = 9101, host: str = "0.0.0.0", device: str = "auto",
          require_gpu: bool = False, threads: int | None = None, max_message_mb: float = 4.0,
          max_workers: int | None = None, cache_size: int = 16, grace_s: float = 5.0, *, max_streams: int = 16,
          tls_cert=None, tls_key=None, tls_client_ca=None, token: str | None = None,
          stream_idle_s: float | None = 600.0, cache_mb: float = 512.0, work_slots: int | None = None,
          queue: int | None = None, queue_wait_s: float = 5.0) -> int:
    """Run the network process until SIGTERM/SIGINT; in-flight calls get `grace_s` seconds to finish."""
    from splitinfer.common.transport import wire
    from splitinfer.common.transport.metrics import Metrics
    from splitinfer.common.transport.security import resolve_token, server_credentials
    from splitinfer.server.model_repository import ModelRepository

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    _check_limits(max_message_mb=max_message_mb, max_streams=max_streams, max_workers=max_workers,
                  work_slots=work_slots, queue=queue, queue_wait_s=queue_wait_s, cache_mb=cache_mb)
    if stream_idle_s is not None and stream_idle_s <= 0:
        stream_idle_s = None
    credentials = server_credentials(tls_cert, tls_key, tls_client_ca)  # files checked before the slow start
    token = resolve_token(token)
    if token and credentials is None:
        print("splitinfer serve: warning: bearer token without TLS: it travels in clear (add --tls-cert/--tls-key)",
              file=sys.stderr, flush=True)
    tune_allocator()
    repo = ModelRepository(models, device=device, threads=threads, require_gpu=require_gpu, cache_size=cache_size,
                           cache_mb=cache_mb)
    if repo.skipped:
        print(f"splitinfer serve: warning: not served (family unknown: no model.json \"family\", no splitinfer.family "
              f"metadata): {', '.join(repo.skipped)}", file=sys.stderr, flush=True)
    providers = repo.check_gpu() if (require_gpu or device == "gpu") else None
    metrics = Metrics("server")
    mport = metrics.serve(metrics_port, host)
    max_message_bytes = int(max_message_mb * wire.MIB)
    server, bound, health_servicer, _ = build_server(repo, metrics, host, port, max_message_bytes, max_workers,
                                                     max_streams=max_streams, credentials=credentials, token=token,
                                                     stream_idle_s=stream_idle_s, work_slots=work_slots, queue=queue,
                                                     queue_wait_s=queue_wait_s)

    security = ("mtls" if tls_client_ca else "tls") if credentials else "plaintext"
    ready = (f"{READY_PREFIX} {host}:{bound} metrics {mport} models {','.join(repo.ids())} "
             f"device {device}{' providers ' + ','.join(providers) if providers else ''} "
             f"security {security}{'+token' if token else ''} max-streams {max_streams}")
    _run_until_signal(server, health_servicer, metrics, grace_s, ready)
    print("splitinfer serve: stopped", flush=True)
    return 0


def _check_limits(*, max_message_mb: float, max_streams: int, max_workers: int | None, work_slots: int | None,
                  queue: int | None, queue_wait_s: float, cache_mb: float) -> None:
    """UserError naming the flag when a limit of `serve` is out of its range."""
    if max_message_mb <= 0:
        raise UserError(f"--max-message-mb must be positive, got {max_message_mb}")
    if max_streams < 1:
        raise UserError(f"--max-streams must be at least 1, got {max_streams}")
    if max_workers is not None and max_workers < max_streams + 1:
        raise UserError(f"--max-workers must exceed --max-streams ({max_streams}), got {max_workers}")
    if work_slots is not None and work_slots < 1:
        raise UserError(f"--work-slots must be at least 1, got {work_slots}")
    if queue is not None and queue < 0:
        raise UserError(f"--queue must be 0 or more, got {queue}")
    if queue_wait_s <= 0:
        raise UserError(f"--queue-wait-s must be positive, got {queue_wait_s}")
    if cache_mb <= 0:
        raise UserError(f"--cache-mb must be positive, got {cache_mb}")


def _run_until_signal(server, health_servicer, metrics, grace_s: float, ready_line: str) -> None:
    """Print the ready line, serve until SIGTERM/SIGINT, then drain: health NOT_SERVING, `grace_s` to finish."""
    stop = threading.Event()

    def on_signal(signum, _frame):
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    print(ready_line, flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        health_servicer.enter_graceful_shutdown()
        server.stop(grace_s).wait()
        metrics.close()
        for s, h in previous.items():
            signal.signal(s, h)


def main(argv=None) -> int:
    from splitinfer.common.cli import main as cli_main

    return cli_main(["serve", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
