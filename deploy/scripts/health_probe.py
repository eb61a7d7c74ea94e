#!/opt/splitinfer/bin/python
"""gRPC health probe for the network process (compose healthcheck): exit 0 only when SERVING.

Why: the standard grpc.health.v1 check, so orchestrators wait for a server that really answers
RPCs, not merely for an open port. Usage: splitinfer-health [HOST:PORT] [SERVICE]
TLS from the environment, as the services get it: SPLITINFER_TLS_CA (server CA; enables TLS),
SPLITINFER_TLS_CERT + SPLITINFER_TLS_KEY (client certificate, for mutual TLS),
SPLITINFER_TLS_SERVER_NAME (name in the server certificate, when it is not HOST).
"""

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def _read(var):
    path = os.environ.get(var)
    if not path:
        return None
    with open(path, "rb") as fh:
        return fh.read()


def main() -> int:
    target = sys.argv[1] if len(sys.argv) > 1 else f"127.0.0.1:{os.environ.get('SPLITINFER_PORT', '50051')}"
    service = sys.argv[2] if len(sys.argv) > 2 else ""
    ca = _read("SPLITINFER_TLS_CA")
    if ca:
        creds = grpc.ssl_channel_credentials(ca, _read("SPLITINFER_TLS_KEY"), _read("SPLITINFER_TLS_CERT"))
        name = os.environ.get("SPLITINFER_TLS_SERVER_NAME")
        options = [("grpc.ssl_target_name_override", name)] if name else []
        channel = grpc.secure_channel(target, creds, options=options)
    else:
        channel = grpc.insecure_channel(target)
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=3)
    except grpc.RpcError as exc:
        print(f"{target}: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{target}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
