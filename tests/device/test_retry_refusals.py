"""A refusal ends a frame after one attempt; only statuses after which the same request may succeed are
retried (issue 23: RESOURCE_EXHAUSTED counted as transient went unnoticed). Unit level, and a real
network process refusing an oversize unary frame."""

import pytest

from splitinfer.device.retry import TRANSIENT, RpcFailure

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize("code", ["RESOURCE_EXHAUSTED", "INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION",
                                  "UNAUTHENTICATED", "PERMISSION_DENIED", "INTERNAL", "UNIMPLEMENTED"])
def test_refusals_are_not_transient(code):
    assert code not in TRANSIENT and not RpcFailure(code, "x", "h:1").transient


def test_an_oversize_unary_frame_ends_after_one_attempt():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_pipeline import CountingFrames, pipeline_for  # noqa: E402

    from grpc_helpers import env_one_thread
    from splitinfer.common.assets import bundled_images, default_model_path
    from splitinfer.common.core.images import read_image
    from splitinfer.experiments.server_process import ServerProcess
    from splitinfer.device.part1 import Part1
    from splitinfer.device.retry import RetryPolicy

    img = read_image(next(p for p in bundled_images() if p.name == "dog.jpg"))
    part1 = Part1(default_model_path(), rank=120, threads=1)  # 1.8 MB cross at rank 120
    server = ServerProcess(threads=1, device="cpu", max_message_mb=0.5, env=env_one_thread())
    policy = RetryPolicy(reconnect_s=2.0, max_attempts=3, frame_timeout_s=30, backoff_initial_s=0.05)
    client, pipeline = pipeline_for(server, part1, retry=policy, codec="none", unary=True, tolerate_failures=True)
    try:
        records = list(pipeline.run(CountingFrames([("dog", img)], 2)))
    finally:
        pipeline.close()
        client.close()
        assert server.stop() == 0
    assert len(records) == 2 and not any(r.ok for r in records)
    assert [r.attempts for r in records] == [1, 1], [(r.attempts, r.error) for r in records]
    assert all("RESOURCE_EXHAUSTED" in r.error or "larger than max" in r.error for r in records), \
        [r.error for r in records]
