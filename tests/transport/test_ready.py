"""The network process's ready line: what server/main.py prints is what ServerProcess parses (one module)."""

import pytest

from splitinfer.common.transport.ready import READY_PREFIX, parse_ready


def test_the_ready_line_gives_both_bound_ports():
    line = f"{READY_PREFIX} 127.0.0.1:43117 metrics 40211 models nanodet device cpu security plaintext max-streams 64"
    assert parse_ready(line) == (43117, 40211)


@pytest.mark.parametrize("line", ["splitinfer serve: starting", f"{READY_PREFIX} 127.0.0.1:x metrics 1",
                                  f"{READY_PREFIX} 127.0.0.1:5 models a"])
def test_a_line_without_the_ports_is_refused(line):
    with pytest.raises(ValueError):
        parse_ready(line)
