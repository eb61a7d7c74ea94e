"""Throughput of one network process under load, side by side: 1 UE process vs N UE processes at once.

Starts `splitinfer serve` (one process) and runs `splitinfer device` processes against it: first one alone,
then --ues of them at the same time, each sending --frames frames (a bundled photo repeated) at --split
with --codec. Throughput is measured from the UEs' per-frame logs (`results_frames.csv`: when each frame
ended and its end-to-end time), over the window from the first frame read to the last answer, so process
start-up does not count. Prints frames/s, median and p95 end-to-end latency, the server's resident memory
before and at its peak, errors (must be 0) and the ratio N UEs / 1 UE. Every frame costs the whole model,
split between the processes, so the ratio is bounded by the cores: on 2 cores one UE with 2 frames in flight
already keeps both busy (measured: 8 UEs x 20 frames, 11.0 frames/s vs 12.0 for one UE, 0.92x; peak server
RSS +68 MB, 0 failed); with more cores it shows how far one network process scales.

  .venv/bin/python bench/bench_load.py --ues 8 --frames 6 --split 120
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def run_ues(address: str, n: int, frames: int, split: str, codec: str, in_flight: int, work: Path,
            server_pid: int, label: str) -> dict:
    from splitinfer.common.assets import bundled_images

    photos = [p for p in bundled_images() if p.suffix.lower() == ".jpg"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    outs, procs = [], []
    peak = {"rss": _rss_kb(server_pid)}
    rss_before = peak["rss"]
    done = threading.Event()

    def watch():
        while not done.wait(0.1):
            peak["rss"] = max(peak["rss"], _rss_kb(server_pid))

    threading.Thread(target=watch, daemon=True).start()
    try:
        for i in range(n):
            out = work / f"{label}_ue{i}"
            outs.append(out)
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "splitinfer.common.cli", "device", "--server", address,
                 "-s", str(photos[i % len(photos)]), "-loop", str(frames), "--split", split, "-encode_algo", codec,
                 "--in-flight", str(in_flight), "-no_CPU_anchor", "-no_GPU_anchor", "--no-overlay",
                 "--threads", "1", "-results_dir", str(out)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
        failures = []
        for p in procs:
            _, err = p.communicate(timeout=1800)
            if p.returncode:
                failures.append(err.strip().splitlines()[-1] if err.strip() else f"exit {p.returncode}")
    finally:
        done.set()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    starts, ends, e2e, failed = [], [], [], 0
    for out in outs:
        path = out / "results_frames.csv"
        if not path.exists():
            continue
        with path.open(newline="") as fh:
            for r in csv.DictReader(fh):
                if r["Status"] != "ok":
                    failed += 1
                    continue
                end, lat = float(r["Ended_unix_s"]), float(r["End_to_end_ms"]) / 1e3
                ends.append(end)
                starts.append(end - lat)
                e2e.append(lat * 1e3)
    window = (max(ends) - min(starts)) if ends else float("nan")
    e2e.sort()
    return {"ues": n, "frames": len(ends), "failed": failed + len(failures), "window_s": window,
            "fps": len(ends) / window if ends else 0.0, "median_ms": statistics.median(e2e) if e2e else 0.0,
            "p95_ms": e2e[int(0.95 * (len(e2e) - 1))] if e2e else 0.0, "rss_before_mb": rss_before / 1024,
            "rss_peak_mb": peak["rss"] / 1024, "errors": failures}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ues", type=int, default=8, help="UE processes at once (default 8)")
    ap.add_argument("--frames", type=int, default=6, help="frames per UE (default 6)")
    ap.add_argument("--split", default="120", help="split rank (default 120)")
    ap.add_argument("--codec", default="zstd", help="codec (default zstd)")
    ap.add_argument("--in-flight", type=int, default=2, help="frames in flight per UE (default 2)")
    ap.add_argument("--server-threads", type=int, default=1, help="intra-op threads of Part II (default 1)")
    args = ap.parse_args(argv)

    from splitinfer.common.transport.process import ServerProcess

    work = Path(tempfile.mkdtemp(prefix="bench_load_"))
    try:
        with ServerProcess(threads=args.server_threads, device="cpu",
                           extra_args=["--max-streams", str(max(16, args.ues))]) as server:
            print(f"network process pid {server.proc.pid} on {server.address}; {os.cpu_count()} cores", flush=True)
            run_ues(server.address, 1, 2, args.split, args.codec, args.in_flight, work, server.proc.pid, "warm")
            rows = [run_ues(server.address, n, args.frames, args.split, args.codec, args.in_flight, work,
                            server.proc.pid, f"n{n}") for n in (1, args.ues)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nsplit {args.split}, codec {args.codec}, {args.frames} frames per UE, {args.in_flight} in flight")
    print(f"{'UEs':>4} {'frames':>6} {'failed':>6} {'window s':>8} {'frames/s':>8} {'median ms':>9} {'p95 ms':>7} "
          f"{'server RSS MB':>14}")
    for r in rows:
        print(f"{r['ues']:4d} {r['frames']:6d} {r['failed']:6d} {r['window_s']:8.2f} {r['fps']:8.2f} "
              f"{r['median_ms']:9.1f} {r['p95_ms']:7.1f} {r['rss_before_mb']:6.0f} -> {r['rss_peak_mb']:4.0f}")
        for e in r["errors"]:
            print(f"     error: {e}")
    one, many = rows
    print(f"\nthroughput {many['ues']} UEs / 1 UE: {many['fps'] / one['fps']:.2f}x "
          f"(cores: {os.cpu_count()}); every frame answered: {'yes' if many['failed'] == one['failed'] == 0 else 'NO'}")
    return 0 if many["failed"] == one["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
