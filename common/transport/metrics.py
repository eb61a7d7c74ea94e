"""Prometheus metrics of the UE and network processes, one registry per process, served over HTTP.

Why a registry per `Metrics` object rather than prometheus-client's global one: tests and the demo run a
UE inside the same Python process as other code, and each process must expose only its own series.
Both processes use the same metric names (a dashboard sums or compares them); each observes the stages
it runs: Part I, encode, serialization, transfer, end-to-end on the UE; deserialization, decode, Part II,
consolidation and post-processing on the server. Labels are model, split (rank) and codec; values that
come from a client are only used once the server has resolved them (unknown ones read "unknown"). Even
resolved, (split, codec) pairs are many (138 ranks x ~120 codec specs for NanoDet), so a client naming a new
pair per session would grow the /metrics page and the process without bound: a `Metrics` keeps at most
`max_label_sets` distinct label sets; later ones are counted under split="other", codec="other" (model ids
are the repository's, so bounded already).

Series at zero: prometheus-client creates a labelled series at its first observation, and a rate over a
series whose first scraped sample already holds every frame of a short run is empty, so both processes call
`Metrics.open_session(labels)` at session set-up: every series of that session exists from then on at 0.
Buckets are fine (5 ms apart between 10 and 100 ms, 10 ms up to 200 ms) where this system's per-frame
latencies lie, so a quantile read off them lies within a few ms of the real one.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LABELS = ("model", "split", "codec")
UNKNOWN = "unknown"
OTHER = "other"
MAX_LABEL_SETS = 64
# 0.25 ms .. 20 s: a loopback transfer of a small tensor up to a lossy codec on a big one; fine where the
# per-frame stage and end-to-end times of this system lie (a few ms to ~200 ms).
BUCKETS = tuple(sorted({0.00025, 0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.0075}
                       | {round(0.005 * k, 3) for k in range(2, 21)}        # 10, 15, .., 100 ms
                       | {round(0.01 * k, 3) for k in range(11, 21)}        # 110, 120, .., 200 ms
                       | {0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0}))

STAGES = {
    "part1": "Part I inference on the UE",
    "part2": "Part II inference on the server",
    "encode": "encoding the crossing tensors (codec)",
    "decode": "decoding the crossing tensors (codec)",
    "serialize": "building the protobuf messages of a frame",
    "deserialize": "parsing the messages of a frame and reassembling its chunks",
    "transfer": "network time of a frame: round trip minus the server's own time",
    "consolidate": "merging Part I's final outputs with Part II's outputs",
    "postprocess": "family post-processing into detections",
    "end_to_end": "from the frame read on the UE to its detections back on the UE",
}
# The stages each role observes (the series `open_session` creates at zero).
ROLE_STAGES = {
    "device": ("part1", "encode", "serialize", "transfer", "end_to_end"),
    "server": ("deserialize", "decode", "part2", "consolidate", "postprocess"),
}


class Metrics:
    """The metrics of one process (`role` is 'device' or 'server')."""

    def __init__(self, role: str, max_label_sets: int = MAX_LABEL_SETS):
        self.role = role
        self.max_label_sets = int(max_label_sets)
        self._label_sets: set[tuple] = set()
        self._label_lock = threading.Lock()
        self.registry = CollectorRegistry(auto_describe=True)
        self.seconds = {
            stage: Histogram(f"splitinfer_{stage}_seconds", f"Time of {doc}.", LABELS,
                             registry=self.registry, buckets=BUCKETS)
            for stage, doc in STAGES.items()
        }
        self.frames = Counter("splitinfer_frames", "Frames processed.", LABELS, registry=self.registry)
        self.raw_bytes = Counter("splitinfer_raw_bytes", "Bytes of the crossing tensors before encoding.",
                                 LABELS, registry=self.registry)
        self.encoded_bytes = Counter("splitinfer_encoded_bytes", "Bytes of the crossing tensors after encoding.",
                                     LABELS, registry=self.registry)
        self.coded_frames = Counter("splitinfer_coded_frames", "Frames by how they were coded: kind 'key' (a "
                                    "random access point: every frame of a per-frame codec) or 'predicted' "
                                    "(a sequential codec's inter frame).", LABELS + ("kind",),
                                    registry=self.registry)
        self.errors = Counter("splitinfer_errors", "Failed requests or frames, by gRPC status code.",
                              LABELS + ("code",), registry=self.registry)
        heap = Gauge("splitinfer_heap_in_use_bytes", "Bytes the C allocator has handed out and not had back "
                     "(glibc mallinfo2; -1 where unknown): a leak shows here, fragmentation does not.",
                     registry=self.registry)
        heap.set_function(_heap_in_use)
        info = Gauge("splitinfer_process_info", "Constant 1; the role of this process.", ("role",),
                     registry=self.registry)
        info.labels(role=role).set(1)
        self._http = None

    def bounded(self, labels: dict) -> dict:
        """`labels`, or its model with split and codec "other" once `max_label_sets` sets exist."""
        key = tuple(str(labels.get(k, UNKNOWN)) for k in LABELS)
        with self._label_lock:
            if key in self._label_sets:
                return dict(zip(LABELS, key))
            if len(self._label_sets) < self.max_label_sets:
                self._label_sets.add(key)
                return dict(zip(LABELS, key))
        return {"model": key[0], "split": OTHER, "codec": OTHER}

    def open_session(self, labels: dict) -> None:
        """Create every series of a session (stage histograms of this role, frame and byte counters) at 0,
        so that rates are defined from the first frame on."""
        labels = self.bounded(labels)
        for stage in ROLE_STAGES.get(self.role, tuple(STAGES)):
            self.seconds[stage].labels(**labels)
        for counter in (self.frames, self.raw_bytes, self.encoded_bytes):
            counter.labels(**labels)

    def observe(self, labels: dict, **seconds: float) -> None:
        """Record stage durations in seconds, e.g. observe(labels, part1=0.01, encode=0.002)."""
        labels = self.bounded(labels)
        for stage, value in seconds.items():
            if value is not None:
                self.seconds[stage].labels(**labels).observe(max(0.0, float(value)))

    def count_frame(self, labels: dict, raw_bytes: int, encoded_bytes: int, keyframe: bool = True) -> None:
        labels = self.bounded(labels)
        self.frames.labels(**labels).inc()
        self.coded_frames.labels(**labels, kind="key" if keyframe else "predicted").inc()
        self.raw_bytes.labels(**labels).inc(raw_bytes)
        self.encoded_bytes.labels(**labels).inc(encoded_bytes)

    def count_error(self, code: str, labels: dict | None = None) -> None:
        labels = self.bounded(labels or {})
        self.errors.labels(**labels, code=code).inc()

    def serve(self, port: int, host: str = "0.0.0.0") -> int:
        """Serve /metrics on `port` (0: a free port); returns the port really bound."""
        from splitinfer.common.core.errors import UserError

        try:
            self._http, _ = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise UserError(f"cannot serve metrics on {host}:{port}: {exc}") from None
        return int(self._http.server_port)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


def _heap_in_use() -> float:
    from splitinfer.common.core.allocator import heap_in_use_bytes

    value = heap_in_use_bytes()
    return -1.0 if value is None else float(value)


def labels_for(model: str, split, codec: str) -> dict:
    return {"model": str(model), "split": str(split), "codec": str(codec)}
