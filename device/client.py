"""The UE's gRPC connection to the network process: one channel, unary calls and the frame stream.

Why a reader thread per stream: replies are taken off the stream and stamped as they arrive, so a
frame's latency is right even while the caller runs Part I of the next frame. Terms:
- set-up: the first message of a stream (model id, split, codec); the server answers it with the
  session's info (its crossing list, Part II's provider, its message limit) before any frame.
- every call has a deadline: the set-up's answer, each frame's reply, each unary call, each readiness
  probe (see retry.RetryPolicy); failures come out as retry.RpcFailure, classified.
"""

from __future__ import annotations

import queue
import threading
import time

from splitinfer.common.core.errors import UserError
from splitinfer.common.transport import wire
from splitinfer.common.transport.proto import splitinfer_pb2 as pb
from splitinfer.device.retry import RetryPolicy, RpcFailure, classify

SERVICE = "/splitinfer.v1.SplitInference/"

# Client keepalive (the server permits pings every 10 s) and quick reconnection: gRPC's own reconnect
# backoff grows to 120 s by default, which would sit out a server restart long after it is back.
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]


NOTIFY_EVERY_S = 10.0  # how often a wait for an absent server says it is still waiting


class UEClient:
    """A gRPC connection to the network process (no compression, configurable message limit).

    `credentials`: grpc channel credentials (TLS / mutual TLS, see common/transport/security.py); `token`: bearer
    token sent on every call; `server_name`: the name to expect in the server's certificate when it differs
    from the address's host; `shaper`: in-process rate/delay emulation of the uplink.
    """

    def __init__(self, address: str, max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES, shaper=None, *,
                 credentials=None, token: str | None = None, server_name: str | None = None,
                 retry: RetryPolicy | None = None):
        import grpc

        from splitinfer.common.transport.security import auth_metadata

        self.address = address
        self.max_message_bytes = int(max_message_bytes)
        self.shaper = shaper
        self.retry = retry or RetryPolicy()
        self.metadata = auth_metadata(token)
        options = [("grpc.max_send_message_length", self.max_message_bytes + 4096),
                   ("grpc.max_receive_message_length", 64 * wire.MIB), *CHANNEL_OPTIONS]
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        self.secure = credentials is not None
        if credentials is not None:
            self.channel = grpc.secure_channel(address, credentials, options=options,
                                               compression=grpc.Compression.NoCompression)
        else:
            self.channel = grpc.insecure_channel(address, options=options, compression=grpc.Compression.NoCompression)
        self._infer = self.channel.unary_unary(SERVICE + "Infer", request_serializer=None,
                                               response_deserializer=pb.InferReply.FromString)
        self._stream = self.channel.stream_stream(SERVICE + "Stream", request_serializer=None,
                                                  response_deserializer=pb.StreamReply.FromString)
        self._list = self.channel.unary_unary(SERVICE + "ListModels",
                                              request_serializer=pb.ListModelsRequest.SerializeToString,
                                              response_deserializer=pb.ListModelsReply.FromString)

    def wait_ready(self, timeout: float | None = None, say=None) -> None:
        """Until the server answers a call, probing with backoff; at least one probe, each within the
        frame timeout. UserError with the last reason after `timeout` s (default: the reconnect budget),
        or at once when the server refuses (wrong token, TLS). `say(text)` is told when the first probe fails
        (that it waits, and how long) and then every `NOTIFY_EVERY_S` seconds, so a dead server is no silence."""
        budget = self.retry.reconnect_s if timeout is None else timeout
        start = time.monotonic()
        deadline = start + budget
        delays = self.retry.delays()
        last, told = None, None
        while True:
            left = deadline - time.monotonic()
            last = self._probe(max(min(left, self.retry.frame_timeout_s), 0.5))
            if last is None:
                if told is not None and say is not None:
                    say(f"server {self.address} answered after {time.monotonic() - start:.1f} s")
                return
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if say is not None and (told is None or time.monotonic() - told >= NOTIFY_EVERY_S):
                say(f"server {self.address} not answering ({last.details[:200]}); waiting up to {budget:g} s "
                    f"(--reconnect-s), {left:.0f} s left" if told is None else
                    f"still waiting for {self.address}: {left:.0f} s left of {budget:g} s")
                told = time.monotonic()
            time.sleep(min(next(delays), left))
        why = f": {last.details}" if last is not None else ""
        if last is not None and "socket closed" in last.details.lower():
            why += (" (a server that wants TLS closes plaintext connections: --tls-ca; mutual TLS also needs "
                    "--tls-cert/--tls-key)" if not self.secure else
                    " (a server that wants a client certificate closes the connection: --tls-cert/--tls-key)")
        raise UserError(f"server {self.address} not reachable within {budget:g} s{why}")

    def _probe(self, timeout: float) -> RpcFailure | None:
        """One ListModels call: None when answered, the transient failure otherwise (UserError when futile)."""
        import grpc

        try:
            self._list(pb.ListModelsRequest(), timeout=timeout, metadata=self.metadata)
            return None
        except grpc.RpcError as exc:
            failure = classify(exc, self.address)
        if not failure.transient:
            raise failure.user_error() from None
        if failure.tls_failure:  # a wrong CA or name does not heal
            raise UserError(f"server {self.address}: TLS handshake failed (check --tls-ca, "
                            f"--tls-server-name): {failure.details}") from None
        return failure

    def call_infer(self, request: bytes, timeout: float | None = None) -> pb.InferReply:
        """One unary call; RpcFailure (classified) when it fails."""
        import grpc

        if self.shaper is not None:
            self.shaper.pace(len(request))
        try:
            return self._infer(request, timeout=timeout or self.retry.frame_timeout_s, metadata=self.metadata)
        except grpc.RpcError as exc:
            raise classify(exc, self.address) from None

    def close(self) -> None:
        self.channel.close()


class FrameStream:
    """One bidirectional stream: set-up first, then frames; replies in frame order.

    Failures come out of `receive` as RpcFailure; the set-up's answer and each reply have deadlines.
    """

    _END = object()

    def __init__(self, client: UEClient, setup: pb.SessionSetup, timeout: float | None = None):
        self.client = client
        self._q: queue.Queue = queue.Queue()
        self._q.put(pb.StreamRequest(setup=setup).SerializeToString())
        requests = self._requests()
        if client.shaper is not None:
            requests = client.shaper.wrap(requests, size=len)
        self._call = client._stream(requests, metadata=client.metadata)
        self._results: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, name="ue-replies", daemon=True)
        self._reader.start()
        try:
            first, _ = self._get(timeout or client.retry.setup_timeout_s, "the session set-up")
        except RpcFailure:
            self.close(cancel=True)
            raise
        if first.WhichOneof("kind") != "session":
            self.close(cancel=True)
            raise UserError(f"server {client.address} answered the set-up with {first.WhichOneof('kind')}")
        self.info: pb.SessionInfo = first.session
        # Chunk below both limits: ours and the server's.
        self.max_message_bytes = min(client.max_message_bytes, int(self.info.max_message_bytes or 1 << 62))

    def _requests(self):
        while True:
            item = self._q.get()
            if item is self._END:
                return
            yield item

    def _read(self) -> None:
        try:
            for reply in self._call:
                self._results.put((reply, time.perf_counter()))
            self._results.put((None, None))
        except Exception as exc:  # grpc.RpcError, cancellation: handed to the caller
            self._results.put((exc, None))

    def _get(self, timeout: float, what: str):
        import grpc

        try:
            reply, t = self._results.get(timeout=timeout)
        except queue.Empty:
            self._call.cancel()
            raise RpcFailure("DEADLINE_EXCEEDED", f"no answer to {what} within {timeout:.0f} s",
                             self.client.address) from None
        if reply is None:
            self._results.put((None, None))  # stays closed for later calls
            raise RpcFailure("UNAVAILABLE", "the server closed the stream early", self.client.address)
        if isinstance(reply, grpc.RpcError):
            self._results.put((reply, None))
            raise classify(reply, self.client.address)
        if isinstance(reply, Exception):
            self._results.put((reply, None))
            raise RpcFailure("UNKNOWN", f"stream failed: {reply}", self.client.address, transient=True)
        return reply, t

    def send(self, messages) -> None:
        for m in messages:
            self._q.put(m)

    def receive(self, timeout: float | None = None) -> tuple[pb.FrameResult, float]:
        """The next result and the perf_counter time it arrived; RpcFailure when the stream failed."""
        reply, t = self._get(timeout or self.client.retry.frame_timeout_s, "a frame")
        if reply.WhichOneof("kind") != "result":
            raise RpcFailure("INTERNAL", f"expected a frame result, got {reply.WhichOneof('kind')}",
                             self.client.address, transient=False)
        return reply.result, t

    def close(self, cancel: bool = False, timeout: float = 30.0) -> None:
        """End the stream: after the server's last replies (default) or at once (`cancel`)."""
        self._q.put(self._END)
        if cancel:
            self._call.cancel()
        self._reader.join(timeout=timeout)
        if self._reader.is_alive():
            self._call.cancel()
            self._reader.join(timeout=5)
