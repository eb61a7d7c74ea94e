"""Our own Python stubs of the Open Inference Protocol (KServe v2, `inference.GRPCInferenceService`).

Why our own: the stubs that ship with tritonclient and kserve are generated for protobuf < 7, while this
project's stack is on protobuf 7; these are generated from proto/grpc_predict_v2.proto by
scripts/gen_proto.sh with our grpcio-tools (a test regenerates them and fails when they are stale).
Only the network process's OIP endpoint (server/oip.py) and the UE's OIP client (device/oip_client.py) use
them; the KServe model path (server/oip_kserve.py, run in .venv-oip) never does.
"""
