"""Hostile requests at Part II on a real KServe ModelServer (.venv-oip, its own process): repeated output names
answered once with the server's memory flat (from /proc), too many names and a non-string meta refused, and
each refusal logged as one line, never a traceback (issue 23)."""

from __future__ import annotations

import time

import grpc
import pytest

from oip_helpers import IA, OK, Caller, KServeProcess, measured, request, require_oip_venv
from grpc_helpers import real_frame

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def kserve():
    require_oip_venv()
    ks = KServeProcess(["nanodet.r136"])
    yield ks
    ks.stop()


@pytest.fixture(scope="module")
def frame():
    return real_frame(136)


def test_kserve_refusals_and_repeated_outputs(kserve, frame):
    c = Caller(kserve.address)
    code, details, _ = c.infer(request(frame))
    assert code == OK, details
    (code, details, reply), peak, after = measured(
        kserve.proc.pid, lambda: c.infer(request(frame, outputs=["Identity:0"] * 200)))
    print(f"KServe, 200 x Identity:0: {code.name}, peak +{peak:.1f} MB, after +{after:.1f} MB")
    assert code == OK, details
    assert [o.name for o in reply.outputs] == ["Identity:0"]
    assert peak < 60, f"+{peak:.0f} MB"  # the issue: +1,003 MB peak, +501 MB after
    refusals = 0
    code, details, _ = c.infer(request(frame, outputs=["Identity:0"] * 1000))
    assert code == IA and "more than 256 outputs" in details, details
    refusals += 1
    r = request(frame)
    r.parameters["meta"].Clear()
    r.parameters["meta"].int64_param = 5
    code, details, _ = c.infer(r)
    assert code == IA and "'meta' must be a string" in details, details
    refusals += 1
    r = request(frame)
    r.model_name = "nanodet.r136\n"
    code, _, _ = c.infer(r)
    assert code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
    c.channel.close()
    time.sleep(0.5)
    kserve.stop()
    log = kserve.proc.stderr.read()
    print(f"KServe stderr after {refusals} refusals: {len(log.splitlines())} lines:\n{log[-1500:]}")
    assert "Traceback" not in log, log[-3000:]
    refused_lines = [line for line in log.splitlines() if "more than 256 outputs" in line or "must be a string" in line]
    assert len(refused_lines) <= refusals, log[-3000:]
