"""Admission of decode / Part II work: a few slots, a bounded queue, a deadline; refusals come fast."""

import threading
import time

import pytest

from splitinfer.server.admission import Admission
from splitinfer.server.errors import RequestError


def hold(adm, seconds, started):
    with adm.slot("holder"):
        started.release()
        time.sleep(seconds)


def test_past_the_slots_a_call_waits_at_most_wait_s_then_is_refused():
    adm = Admission(slots=1, queue=4, wait_s=0.3)
    started = threading.Semaphore(0)
    t = threading.Thread(target=hold, args=(adm, 1.5, started))
    t.start()
    started.acquire()
    t0 = time.monotonic()
    with pytest.raises(RequestError) as info:
        with adm.slot("frame 7"):
            pass
    waited = time.monotonic() - t0
    assert info.value.code == "UNAVAILABLE" and "frame 7" in str(info.value) and "retry" in str(info.value)
    assert 0.25 < waited < 1.0
    t.join()
    with adm.slot("after"):  # the slot came back
        pass


def test_a_full_queue_refuses_at_once_and_the_call_deadline_caps_the_wait():
    adm = Admission(slots=1, queue=0, wait_s=5)
    started = threading.Semaphore(0)
    t = threading.Thread(target=hold, args=(adm, 1.0, started))
    t.start()
    started.acquire()
    t0 = time.monotonic()
    with pytest.raises(RequestError):
        with adm.slot():
            pass
    assert time.monotonic() - t0 < 0.1
    adm.queue = 4
    t0 = time.monotonic()
    with pytest.raises(RequestError):
        with adm.slot(time_remaining=0.2):
            pass
    assert time.monotonic() - t0 < 0.5
    t.join()


def test_a_waiting_call_gets_the_slot_when_it_frees():
    adm = Admission(slots=1, queue=1, wait_s=5)
    started = threading.Semaphore(0)
    t = threading.Thread(target=hold, args=(adm, 0.3, started))
    t.start()
    started.acquire()
    with adm.slot():
        pass
    t.join()
    assert adm.refused == 0 and adm.waiting == 0
