"""Admission's fair share (server/admission.py): a client with one call waiting is served before a client
that already keeps the slot and the queue busy, and takes a queue place from it when the queue is full."""

import threading
import time

import pytest

from splitinfer.server.admission import Admission
from splitinfer.server.errors import RequestError


def _call(adm, key, log, hold_s=0.2):
    """Hold the slot `hold_s` seconds, or until `hold_s` (a threading.Event) is set."""
    try:
        with adm.slot("frame", key=key):
            log.append(("got", key))
            if isinstance(hold_s, threading.Event):
                hold_s.wait(30)
            else:
                time.sleep(hold_s)
    except RequestError as exc:
        log.append((exc.code, key))


def _start(adm, key, log, hold_s=0.2):
    t = threading.Thread(target=_call, args=(adm, key, log, hold_s))
    t.start()
    return t


def _wait_for(cond, timeout=5.0):
    t_end = time.monotonic() + timeout
    while not cond() and time.monotonic() < t_end:
        time.sleep(0.005)
    assert cond()


def test_the_light_client_takes_a_full_queues_place_and_the_next_slot():
    adm = Admission(slots=1, queue=2, wait_s=5)
    log: list = []
    release = threading.Event()  # the first call holds the slot until the queue's story is told
    threads = [_start(adm, "flood", log, hold_s=release)]
    _wait_for(lambda: ("got", "flood") in log)
    threads += [_start(adm, "flood", log) for _ in range(2)]
    _wait_for(lambda: adm.waiting == 2)
    threads.append(_start(adm, "flood", log))  # the queue is full, and the flood would only grow its own share
    _wait_for(lambda: ("UNAVAILABLE", "flood") in log)
    threads.append(_start(adm, "one", log))  # full queue: takes the place of the flood's newest waiter
    _wait_for(lambda: log.count(("UNAVAILABLE", "flood")) == 2)
    release.set()
    for t in threads:
        t.join(10)
    got = [k for what, k in log if what == "got"]
    assert got == ["flood", "one", "flood"], log  # served next, ahead of the flood's older waiter
    assert adm.waiting == 0 and adm._busy == 0 and adm._held == {}


def test_equal_clients_are_served_in_arrival_order_and_a_full_queue_refuses_its_own_client():
    adm = Admission(slots=1, queue=1, wait_s=5)
    log: list = []
    release = threading.Event()  # "a" holds the slot until "c" was refused (a sleep raced on a loaded machine)
    a = _start(adm, "a", log, hold_s=release)
    _wait_for(lambda: ("got", "a") in log)
    b = _start(adm, "b", log)
    _wait_for(lambda: adm.waiting == 1)
    try:
        with pytest.raises(RequestError) as info:  # "c" would be as loaded as "b": no eviction
            with adm.slot("frame", key="c"):
                pass
    finally:
        release.set()
    assert info.value.code == "UNAVAILABLE"
    for t in (a, b):
        t.join(10)
    assert [k for what, k in log if what == "got"] == ["a", "b"]


def test_keys_are_forgotten_once_their_calls_are_out():
    adm = Admission(slots=1, queue=4, wait_s=0.2)
    log: list = []
    holder = _start(adm, "a", log, hold_s=0.5)
    _wait_for(lambda: ("got", "a") in log)
    waiters = [_start(adm, f"k{i}", log) for i in range(3)]  # these time out
    for t in [holder, *waiters]:
        t.join(10)
    assert adm._held == {} and adm._served == {} and adm.waiting == 0 and adm._busy == 0
