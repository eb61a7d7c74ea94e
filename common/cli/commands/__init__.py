"""One module per `splitinfer` subcommand.

Each module defines `NAME`, `HELP` and `add_arguments(parser)` and `run(args) -> int`.
Adding a subcommand is adding one file here: `splitinfer.common.cli` discovers them.
Heavy imports (onnxruntime, torch, grpc) belong inside `run`, so `splitinfer --help` stays fast.
"""
