"""The console-template dashboard the compose stack ships, opened in a real browser after a real run.

What runs: the network process (`ServerProcess`), the UE process (`splitinfer device`, the compose
service's defaults: split 60, zstd, one pass over the bundled photos, `--metrics-linger 6`), Debian's
`prometheus` binary with the compose stack's own prometheus.yml (targets rewritten to the two local metrics
ports, same job names and 2 s scrape interval) and its console templates (deploy/prometheus/consoles and
console_libraries), then headless Chromium on /consoles/splitinfer.html: the DOM it renders must hold the
run's frame counts in both tables, an end-to-end median in range, and drawn graph lines; a screenshot is
written (to $SPLITINFER_DASHBOARD_SCREENSHOT when set, e.g. docs/dashboard.png).
Skipped with the reason where `prometheus` or `chromium` is not installed (scripts/ci_system_deps.sh
installs both).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from splitinfer.common.assets import bundled_images
from splitinfer.experiments.server_process import ServerProcess

REPO = Path(__file__).resolve().parents[2]
PROM_DIR = REPO / "deploy" / "prometheus"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]

pytestmark = pytest.mark.timeout(240)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _prometheus_config(server_port: int, device_port: int) -> dict:
    """The compose stack's prometheus.yml with its targets pointed at this host's ports."""
    cfg = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    targets = {"splitinfer-server": f"127.0.0.1:{server_port}", "splitinfer-device": f"127.0.0.1:{device_port}"}
    for job in cfg["scrape_configs"]:
        for static in job["static_configs"]:
            static["targets"] = [targets[job["job_name"]]]
    return cfg


def _get(url: str, timeout: float = 10) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def _wait(pred, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            got = pred()
            if got:
                return got
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


class _Tables(HTMLParser):
    """Cells of the tables with an id, as text rows: {'si-ue': [[...], ...], ...}."""

    def __init__(self):
        super().__init__()
        self.tables, self._table, self._row, self._cell = {}, None, None, None
        self.paths = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and a.get("id"):
            self._table = self.tables.setdefault(a["id"], [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "path" and re.search(r"\d", a.get("d") or ""):
            self.paths += 1

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _grafana_panels(base: str) -> dict:
    """Each Grafana panel's queries evaluated by this Prometheus over the last 2 minutes: title -> points."""
    dash = json.loads((REPO / "deploy" / "grafana" / "dashboards" / "splitinfer.json").read_text())
    end = time.time()
    points = {}
    for panel in dash["panels"]:
        n = 0
        for target in panel.get("targets", []):
            expr = re.sub(r"\$(model|split|codec)", ".*", target["expr"]).replace("$__rate_interval", "8s")
            q = urllib.parse.urlencode({"query": expr, "start": end - 120, "end": end, "step": 2})
            body = json.loads(_get(f"{base}/api/v1/query_range?{q}"))
            assert body["status"] == "success", (panel["title"], body)
            n += sum(1 for series in body["data"]["result"] for _, v in series["values"]
                     if v not in ("NaN", "+Inf", "-Inf"))
        points[panel["title"]] = n
    return points


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    prom, chromium = shutil.which("prometheus"), _chromium()
    if not prom or not chromium:
        pytest.skip("needs Debian's prometheus and chromium (apt-get install -y prometheus chromium)")
    tmp = tmp_path_factory.mktemp("dashboard")
    device_metrics = _free_port()
    with ServerProcess(threads=1) as server:
        cfg = tmp / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(_prometheus_config(server.metrics_port, device_metrics)))
        prom_port = _free_port()
        prom_proc = subprocess.Popen(
            [prom, f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prom_port}",
             f"--web.console.templates={PROM_DIR / 'consoles'}",
             f"--web.console.libraries={PROM_DIR / 'console_libraries'}"],
            stdout=subprocess.DEVNULL, stderr=open(tmp / "prometheus.log", "w"))
        base = f"http://127.0.0.1:{prom_port}"
        try:
            _wait(lambda: "Ready" in _get(f"{base}/-/ready"), 60, "Prometheus ready")
            device = subprocess.run(
                [sys.executable, "-m", "splitinfer.common.cli", "device", "--server", server.address,
                 "--metrics-port", str(device_metrics), "--metrics-linger", "6", "--split", "60",
                 "-encode_algo", "zstd", "-loop", "1", "-no_GPU_anchor", "--threads", "1", "--no-overlay",
                 "-results_dir", str(tmp / "results")],
                capture_output=True, text=True, timeout=180)
            assert device.returncode == 0, device.stderr[-2000:]
            frames = len(bundled_images())
            q = urllib.parse.quote("sum(splitinfer_frames_total{job='splitinfer-server'})")
            _wait(lambda: f'"{frames}"' in _get(f"{base}/api/v1/query?query={q}"), 30, "server frames scraped")
            url = f"{base}/consoles/splitinfer.html"
            dom = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'chrome-dom'}",
                                  "--virtual-time-budget=8000", "--dump-dom", url],
                                 capture_output=True, text=True, timeout=90)
            shot = tmp / "dashboard.png"
            subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'chrome-shot'}",
                            "--virtual-time-budget=8000", "--window-size=1500,1250", f"--screenshot={shot}", url],
                           capture_output=True, text=True, timeout=90)
            raw = _get(url)
            grafana = _grafana_panels(base)
        finally:
            prom_proc.terminate()
            prom_proc.wait(timeout=30)
    if os.environ.get("SPLITINFER_DASHBOARD_SCREENSHOT") and shot.exists():
        shutil.copy(shot, os.environ["SPLITINFER_DASHBOARD_SCREENSHOT"])
    return {"dom": dom.stdout, "raw": raw, "grafana": grafana, "shot": shot, "frames": frames, "device_out": device.stdout}


def test_console_tables_hold_the_runs_frames_and_times(run):
    page = _Tables()
    page.feed(run["raw"])  # rendered by Prometheus itself: no browser needed for the tables
    targets = page.tables["si-targets"][1:]
    assert {r[0] for r in targets} == {"splitinfer-server", "splitinfer-device"}
    assert any(r[0] == "splitinfer-server" and r[3] == "yes" for r in targets)
    for table in ("si-ue", "si-server"):
        head, *rows = page.tables[table]
        assert len(rows) == 1, (table, rows)
        row = dict(zip(head, rows[0]))
        assert (row["model"], row["split"], row["codec"].split(":")[0]) == ("nanodet", "60", "zstd")
        assert int(row["frames"]) == run["frames"]
    head, row = page.tables["si-ue"]
    ue = dict(zip(head, row))
    e2e = float(ue["end-to-end p50 ms"])
    assert 0.5 < e2e < 5000, ue
    assert float(ue["raw KB/frame"]) > float(ue["encoded KB/frame"]) > 0, ue
    assert float(ue["Part I ms"]) > 0 and float(ue["transfer p50 ms"]) >= 0, ue


def test_browser_draws_the_graphs(run):
    page = _Tables()
    page.feed(run["dom"])
    assert "si-graph-fps" in run["dom"], run["dom"][:2000]
    assert page.paths >= 4, "Rickshaw drew fewer than 4 lines with data points"
    assert run["shot"].exists() and run["shot"].stat().st_size > 20_000


def test_every_grafana_panel_but_errors_has_data_after_a_short_run(run):
    empty = [title for title, n in run["grafana"].items() if n == 0 and "rror" not in title]
    assert not empty, f"Grafana panels with no data after an 11-frame run: {empty} ({run['grafana']})"
