"""Transport layer: what crosses the network between the UE and the network process.

`wire` (protobuf <-> numpy, chunking and reassembly), `proto` (generated gRPC code), `security`
(TLS, mutual TLS, bearer token), `shaper` (in-process link shaping, rate parsing), `metrics`
(Prometheus exposition shared by both processes), `process` (the network process as an OS process).
"""
