"""`serve --stream-idle-s` counts only time spent waiting on the client (issue 23: counting the server's own
work as idle went unnoticed). A fresh server with a 0.1 s idle limit builds Part II for a stream's set-up
(the model's analysis, the session, the warm-up: longer than 0.2 s) and answers it; the stream is then
cancelled once it has waited on its client longer than the limit."""

import queue
import time

import grpc
import pytest

from grpc_helpers import Stubs, real_frame, setup_msg
from splitinfer.common.codecs import get_codec
from splitinfer.experiments.server_process import ServerProcess

pytestmark = pytest.mark.timeout(180)
IDLE_S = 0.1  # the set-up below takes 0.28 s on an idle 2-core machine, more under load


def test_a_stream_busy_longer_than_the_idle_limit_is_not_cancelled():
    frame = real_frame(5)
    with ServerProcess(threads=1, device="cpu", extra_args=["--stream-idle-s", str(IDLE_S)]) as srv:
        stubs = Stubs(srv.address)
        q: queue.Queue = queue.Queue()
        q.put(setup_msg(5))  # nothing built yet: the set-up pays the model's analysis and Part II's build
        t0 = time.monotonic()
        replies = stubs.stream(iter(q.get, None), timeout=120)
        first = next(replies)
        setup_s = time.monotonic() - t0
        assert first.WhichOneof("kind") == "session"
        assert setup_s > 2 * IDLE_S, f"the set-up took {setup_s:.2f} s: too fast to show anything"
        for m in frame.messages(1, get_codec("none")):
            q.put(m)
        assert next(replies).result.frame_id == 1
        t_wait = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:  # now the client is silent: cancelled after the limit
            next(replies)
        waited = time.monotonic() - t_wait
        q.put(None)
        stubs.close()
    print(f"set-up (server busy) {setup_s:.2f} s with --stream-idle-s {IDLE_S}: answered; then cancelled after "
          f"{waited:.2f} s of client silence")
    assert info.value.code() == grpc.StatusCode.CANCELLED
    assert IDLE_S <= waited < IDLE_S + 3
