"""Load: 8 UE processes stream to one network process at once. Every frame answered, no errors, the server's
memory bounded, and the streams really overlapped (the server's `splitinfer_streams_active` gauge).

Sized for 2 cores: each UE sends one photo 3 times at split 120 (Part I yields most of the model's outputs,
so the frames are small) with zstd, one thread per process. Throughput figures: bench/bench_load.py.
"""

import shutil
import threading
import time

import pytest

from grpc_helpers import cli, env_one_thread, read_csv, rss_kb, scrape, stop_process
from splitinfer.common.assets import bundled_images

pytestmark = pytest.mark.timeout(400)

UES = 8
LOOPS = 3
SPLIT = "120"
PHOTOS = ("dog.jpg", "horses.jpg", "kite.jpg", "person.jpg", "eagle.jpg", "giraffe.jpg", "coffee.jpg",
          "motorcycle_left.jpg")


def device_args(address, photo, out):
    return cli("device", "--server", address, "-s", str(photo), "-loop", str(LOOPS), "--split", SPLIT,
               "-encode_algo", "zstd", "--in-flight", "2", "-no_CPU_anchor", "-no_GPU_anchor", "--no-overlay",
               "--threads", "1", "-results_dir", str(out))


def test_eight_ue_processes_at_once(tmp_path):
    import subprocess

    from splitinfer.experiments.server_process import ServerProcess

    paths = {p.name: p for p in bundled_images()}
    photos = []
    for name in PHOTOS[:UES]:
        shutil.copy(paths[name], tmp_path / name)
        photos.append(tmp_path / name)
    server = ServerProcess(threads=1, device="cpu", env=env_one_thread())
    procs = []
    try:
        # one UE first: Part II built and cached, connections and allocator warm; then memory is measured
        warm = subprocess.run(device_args(server.address, photos[0], tmp_path / "warm"), capture_output=True,
                              text=True, timeout=180, env=env_one_thread())
        assert warm.returncode == 0, warm.stderr[-2000:]
        rss_before = rss_kb(server.proc.pid)
        frames_before = _frames_total(server.metrics_port)

        peak = {"streams": 0.0, "rss": rss_before}
        done = threading.Event()

        def watch():
            while not done.is_set():
                try:
                    peak["streams"] = max(peak["streams"], _gauge(server.metrics_port, "splitinfer_streams_active"))
                    peak["rss"] = max(peak["rss"], rss_kb(server.proc.pid))
                except OSError:
                    pass
                time.sleep(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        t0 = time.monotonic()
        outs = [tmp_path / f"ue{i}" for i in range(UES)]
        procs = [subprocess.Popen(device_args(server.address, photos[i], outs[i]), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env_one_thread()) for i in range(UES)]
        results = [p.communicate(timeout=300) for p in procs]
        wall = time.monotonic() - t0
        done.set()
        watcher.join(5)
        for p, (out, err) in zip(procs, results):
            assert p.returncode == 0, err[-2000:]
            assert "Traceback" not in err
        total = 0
        for photo, out in zip(photos, outs):
            rows = read_csv(out / "results_frames.csv")
            assert [r["Status"] for r in rows] == ["ok"] * LOOPS, rows
            assert [int(r["Index"]) for r in rows] == list(range(LOOPS))
            assert all(int(r["Detections"]) > 0 for r in rows)
            total += len(rows)
        assert total == UES * LOOPS
        samples = scrape(server.metrics_port)
        assert _frames_total(server.metrics_port) - frames_before == total  # the server saw each frame once
        errors = {k: v for k, v in samples.items() if k[0] == "splitinfer_errors_total"}
        assert not errors, errors
        assert peak["streams"] >= 2, f"the UEs never overlapped (peak {peak['streams']} streams)"
        grown_mb = (peak["rss"] - rss_before) / 1024
        print(f"load: {UES} UEs x {LOOPS} frames in {wall:.1f} s (process start-up included), "
              f"peak {peak['streams']:.0f} streams, server RSS {rss_before / 1024:.0f} MB, peak +{grown_mb:.0f} MB")
        assert grown_mb < 300, f"server memory grew by {grown_mb:.0f} MB under {UES} streams"
        assert _gauge(server.metrics_port, "splitinfer_streams_active") == 0  # every stream closed
    finally:
        for p in procs:
            stop_process(p)
        assert server.stop() == 0


def _gauge(port, name):
    return sum(v for (n, _), v in scrape(port).items() if n == name)


def _frames_total(port):
    return sum(v for (n, _), v in scrape(port).items() if n == "splitinfer_frames_total")
