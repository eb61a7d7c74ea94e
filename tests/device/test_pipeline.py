"""pipeline.FramePipeline against a real network process (an OS process, real gRPC): frames end in
frame order with frames in flight, and once the server is given up on no further frame is read, while
every frame read ends with a record."""

import pytest

from grpc_helpers import env_one_thread
from splitinfer.common.assets import DEFAULT_MODEL_ID, bundled_images, default_model_path
from splitinfer.common.codecs import get_codec
from splitinfer.common.core.errors import UserError
from splitinfer.common.core.images import read_image
from splitinfer.common.families import get_family

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def images():
    paths = {p.name: p for p in bundled_images()}
    return [(name.rsplit(".", 1)[0], read_image(paths[name])) for name in ("dog.jpg", "horses.jpg")]


@pytest.fixture(scope="module")
def part1():
    from splitinfer.device.part1 import Part1

    return Part1(default_model_path(), rank=120, threads=1)


def start_server():
    from splitinfer.experiments.server_process import ServerProcess

    return ServerProcess(threads=1, device="cpu", env=env_one_thread())


class CountingFrames:
    """(source, index, image) items, counting how many the pipeline has read."""

    def __init__(self, images, n):
        self.images, self.n, self.read = images, n, 0

    def __iter__(self):
        for k in range(self.n):
            self.read += 1
            name, img = self.images[k % len(self.images)]
            yield name, k, img


def pipeline_for(server, part1, retry=None, codec="zstd", **kw):
    from splitinfer.device.client import UEClient
    from splitinfer.device.pipeline import FramePipeline

    client = UEClient(server.address, retry=retry)
    client.wait_ready(60)
    return client, FramePipeline(client, part1, get_family("nanodet"), get_codec(codec), DEFAULT_MODEL_ID, **kw)


@pytest.mark.parametrize("codec,unary", [("zstd", False), ("dzstd", False), ("dzstd", True)])
def test_frames_end_in_frame_order_with_frames_in_flight(images, part1, codec, unary):
    """dzstd (sequential) on the stream: one keyframe, then predicted frames pipelined 3 deep; as unary calls
    (each its own session) every frame is a keyframe."""
    server = start_server()
    try:
        client, pipeline = pipeline_for(server, part1, in_flight=3, codec=codec, unary=unary)
        frames = CountingFrames(images, 5)
        try:
            records = list(pipeline.run(frames))
        finally:
            pipeline.close()
            client.close()
    finally:
        assert server.stop() == 0
    assert [r.frame_id for r in records] == [1, 2, 3, 4, 5]
    assert [(r.source, r.index) for r in records] == [("dog", 0), ("horses", 1), ("dog", 2), ("horses", 3), ("dog", 4)]
    assert all(r.ok and r.attempts == 1 and r.detections for r in records)
    assert records[0].detections == records[2].detections  # the same photo, the same answer
    sequential = codec == "dzstd" and not unary
    assert [r.keyframe for r in records] == [True] + [not sequential] * 4
    if not unary:
        assert list(pipeline.info.crossing) == part1.plan.part1_outputs


def test_after_giving_up_no_frame_is_read_and_every_frame_read_has_a_record(images, part1):
    from splitinfer.device.retry import RetryPolicy

    server = start_server()
    policy = RetryPolicy(reconnect_s=1.0, max_attempts=1, frame_timeout_s=10, backoff_initial_s=0.1)
    client, pipeline = pipeline_for(server, part1, retry=policy, in_flight=2, tolerate_failures=True)
    frames = CountingFrames(images, 20)
    records = []
    try:
        with pytest.raises(UserError, match="no more frames sent"):
            for rec in pipeline.run(frames):
                records.append(rec)
                if len(records) == 1:
                    server.kill()  # SIGKILL: the next frame is already in flight
    finally:
        pipeline.close()
        client.close()
        server.kill()
    assert frames.read < 20, "the pipeline kept reading frames after giving up on the server"
    assert frames.read == len(records), f"{frames.read} frames read, {len(records)} records"
    assert [r.frame_id for r in records] == list(range(1, len(records) + 1))
    # frame 2 was in flight at the SIGKILL: a loaded machine may answer it first; every frame after the first
    # failed one failed too (no frame is answered once the server is gone)
    failed = next(i for i, r in enumerate(records) if not r.ok)
    assert records[0].ok and failed <= 2 and not any(r.ok for r in records[failed:]), [r.ok for r in records]
    assert all("unavailable" in r.error or "gave up" in r.error for r in records[failed:]), [r.error for r in records]
    assert not pipeline.pending


def test_abandon_ends_every_frame_in_flight(images, part1):
    """What the device does on Ctrl-C: frames sent but unanswered, and ones never sent, end failed."""
    server = start_server()
    try:
        client, pipeline = pipeline_for(server, part1, in_flight=4, tolerate_failures=True)
        run = pipeline.run(CountingFrames(images, 10))
        first = next(run)  # four frames went out; the first has ended
        reason = "interrupted (Ctrl-C / SIGTERM)"
        rest = pipeline.abandon(reason)
        run.close()
        pipeline.close(cancel=True)
        client.close()
    finally:
        server.stop()
    assert first.ok and [r.frame_id for r in rest] == [2, 3, 4]
    for r in rest:  # answered meanwhile (ok) or failed with the reason; none left pending
        assert r.ok or (r.error == reason and r.attempts == 1)
    assert not pipeline.pending


def test_a_multi_branch_frame_coded_by_encode_many_is_what_the_server_decodes(images):
    """Split 74 sends 5 tensors; the UE codes them together (nnc's helpers, `encode_many`). The server's
    detections are those of Part II run here on the same payloads decoded by nncodec in this process."""
    import numpy as np

    from splitinfer.common.split.consolidate import consolidated_outputs
    from splitinfer.device.part1 import Part1

    part1 = Part1(default_model_path(), rank=74, threads=1)
    family, codec = get_family("nanodet"), get_codec("nnc:-18")
    server = start_server()
    try:
        from splitinfer.device.client import UEClient
        from splitinfer.device.pipeline import FramePipeline

        client = UEClient(server.address)
        client.wait_ready(60)
        pipeline = FramePipeline(client, part1, family, codec, DEFAULT_MODEL_ID, keep_intermediate=True)
        try:
            (rec,) = pipeline.run([("dog", 0, images[0][1])])
        finally:
            pipeline.close()
            client.close()
    finally:
        assert server.stop() == 0
    assert rec.ok and rec.tensors == 5 and rec.detections
    sent = [np.asarray(rec.intermediate[n]) for n in part1.plan.part1_outputs]
    payloads = [codec.encode(a) for a in sent]  # one by one: the very bytes encode_many sent
    assert rec.encoded_bytes == sum(len(p) for p in payloads) < rec.raw_bytes / 5
    decoded = {n: codec.decode(p, a.dtype, a.shape, trusted=True)
               for n, p, a in zip(part1.plan.part1_outputs, payloads, sent)}
    part2 = part1.part2_session(threads=1)
    out2 = dict(zip(part2.output_names, part2.run({n: decoded[n] for n in part1.plan.part2_inputs})))
    _, meta = family.preprocess(images[0][1])
    assert family.postprocess(consolidated_outputs(part1.plan, decoded, out2), meta) == rec.detections


@pytest.mark.parametrize("in_flight", [1, 2])
def test_a_server_restarted_between_frames_gets_the_unanswered_frames_again_from_a_keyframe(images, part1, in_flight):
    """dzstd, the network process killed and started again on its port between two runs of frames. The UE
    learns of the break when it reads the reply of the next frame, already coded as a predicted frame and
    sent on the dead stream; the new session holds no reference, so that frame (and any other unanswered
    one) is coded again from a keyframe and sent again: every frame answered once, with the same detections,
    and no other keyframe."""
    from splitinfer.experiments.server_process import ServerProcess

    server = start_server()
    port = server.port
    client, pipeline = pipeline_for(server, part1, codec="dzstd", in_flight=in_flight)
    coded = []
    encode_frame = pipeline.encoder.encode_frame

    def counting(names, arrays):
        payloads = encode_frame(names, arrays)
        coded.append(pipeline.encoder.last_keyframe)
        return payloads

    pipeline.encoder.encode_frame = counting
    second = None
    try:
        first = list(pipeline.run(CountingFrames(images[:1], 2)))  # dog, dog: a keyframe, a predicted frame
        server.kill()
        second = ServerProcess(threads=1, device="cpu", env=env_one_thread(), extra_args=["--port", str(port)])
        after = list(pipeline.run(CountingFrames(images[:1], 2)))
    finally:
        pipeline.close()
        client.close()
        server.kill()
        if second is not None:
            second.stop()
    records = first + after
    assert all(r.ok for r in records), [r.error for r in records]
    assert [r.keyframe for r in records] == [True, False, True, False]
    assert [r.attempts for r in records] == [1, 1, 2, 1] if in_flight == 1 else records[2].attempts == 2
    assert coded[:2] == [True, False] and coded[-2:] == [True, False] and coded.count(True) == 2, coded
    assert len(coded) <= 4 + in_flight  # a frame is coded again only when it was coded for the dead stream
    assert pipeline.reconnects == 1
    assert all(r.detections == records[0].detections for r in records)
