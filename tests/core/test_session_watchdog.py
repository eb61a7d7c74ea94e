"""The test session's watchdog (tests/session_watchdog.py): a hang pytest-timeout cannot end still ends the
session, naming the test and showing the stacks, instead of running CI into its limit."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _pytest(tmp_path, body: str, **env) -> subprocess.CompletedProcess:
    (tmp_path / "conftest.py").write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        from session_watchdog import WatchdogPlugin

        def pytest_configure(config):
            config.pluginmanager.register(WatchdogPlugin(config), "splitinfer-watchdog")
        """))
    (tmp_path / "test_x.py").write_text(textwrap.dedent(body))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, **env})


def test_a_hang_pytest_timeout_cannot_reach_ends_the_session_with_the_test_named(tmp_path):
    r = _pytest(tmp_path, """
        import signal, time, pytest

        @pytest.mark.timeout(1)
        def test_blocked():
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})  # pytest-timeout's signal never arrives
            time.sleep(60)
        """, SPLITINFER_TEST_GRACE_S="2")
    assert r.returncode == 3, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert "test_x.py::test_blocked ran past 3 s" in r.stderr
    assert "time.sleep" in r.stderr or "test_blocked" in r.stderr  # the stack of the hung test


def test_the_session_limit_ends_a_session_of_tests_that_each_finish(tmp_path):
    r = _pytest(tmp_path, """
        import time, pytest

        @pytest.mark.parametrize("i", range(20))
        def test_slowish(i):
            time.sleep(1)
        """, SPLITINFER_TEST_SESSION_LIMIT_S="4")
    assert r.returncode == 3 and "the test session ran past 4 s" in r.stderr, r.stderr[-2000:]


def test_tests_within_their_limits_are_untouched(tmp_path):
    r = _pytest(tmp_path, """
        def test_quick():
            assert True
        """, SPLITINFER_TEST_GRACE_S="2")
    assert r.returncode == 0 and "1 passed" in r.stdout, r.stdout
