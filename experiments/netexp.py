"""Network experiments on a real shaped link: two network namespaces joined by a veth pair.

Why: the usual latency estimate "bytes x 8 / bandwidth" ignores protocol overhead, bursts and
queueing. Here the network process and the UE process run as separate OS processes in two
namespaces (`10.77.0.1` server side, `10.77.0.2` UE side, addresses that exist only inside the
namespaces made here), the UE's egress (the uplink) is shaped with `tc tbf` (netem is absent on
many kernels; tbf is everywhere), and the transfer time the UE process really measures is set
against the estimate. Needs root (CAP_NET_ADMIN + CAP_SYS_ADMIN); `namespaces_unavailable()`
says why not where they cannot be made.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass

from splitinfer.common.core.errors import UserError
from splitinfer.device.results import ResultRow, read_results
from splitinfer.experiments.server_process import ServerProcess

SERVER_ADDR = "10.77.0.1"
UE_ADDR = "10.77.0.2"
PREFIX = 30


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def namespaces_unavailable() -> str | None:
    """None when namespaces + veth + tbf can be made here, else the reason (for skips and errors)."""
    if os.name != "posix" or not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_SYS_ADMIN, CAP_NET_ADMIN)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"`{tool}` (iproute2) is not installed"
    try:
        with NetnsLink() as link:
            link.shape(10e6)
    except (UserError, subprocess.CalledProcessError, OSError) as exc:
        return f"cannot make namespaces with a shaped veth link: {exc}"
    return None


def tbf_params(rate_bps: float) -> dict:
    """tbf burst and queue limit for `rate_bps`.

    The burst must hold at least one timer tick of data (else tbf cannot reach the rate) and a GSO
    segment; 10 ms of data, at least 64 KiB. The queue limit is larger than a TCP socket can ever
    have in flight (tcp_wmem max, 4 MiB by default) so shaping never drops: drops would add
    retransmission timeouts that have nothing to do with the rate.
    """
    if rate_bps <= 0:
        raise UserError(f"rate must be positive, got {rate_bps} bit/s")
    burst = max(64 * 1024, int(rate_bps / 8 * 0.010))
    limit = max(16 * 1024 * 1024, int(rate_bps / 8 * 1.0)) + burst
    return {"burst": burst, "limit": limit}


class NetnsLink:
    """Two fresh namespaces `<tag>s` (network process) and `<tag>u` (UE) joined by a veth pair.

    Use as a context manager: everything made is deleted on exit, also after errors.
    """

    def __init__(self, tag: str | None = None):
        tag = tag or f"si{uuid.uuid4().hex[:6]}"
        self.server_ns, self.ue_ns = f"{tag}s", f"{tag}u"
        self.server_if, self.ue_if = f"{tag}vs", f"{tag}vu"
        self._made: list[str] = []

    def __enter__(self) -> "NetnsLink":
        try:
            for ns in (self.server_ns, self.ue_ns):
                r = _ip("netns", "add", ns, check=False)
                if r.returncode:
                    raise UserError(f"ip netns add {ns}: {r.stderr.strip()}")
                self._made.append(ns)
            _ip("link", "add", self.server_if, "type", "veth", "peer", "name", self.ue_if)
            _ip("link", "set", self.server_if, "netns", self.server_ns)
            _ip("link", "set", self.ue_if, "netns", self.ue_ns)
            for ns, dev, addr in ((self.server_ns, self.server_if, SERVER_ADDR),
                                  (self.ue_ns, self.ue_if, UE_ADDR)):
                _ip("-n", ns, "addr", "add", f"{addr}/{PREFIX}", "dev", dev)
                _ip("-n", ns, "link", "set", dev, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Delete the namespaces (their veth ends go with them)."""
        while self._made:
            _ip("netns", "del", self._made.pop(), check=False)

    def prefix(self, side: str) -> list[str]:
        """argv prefix that runs a command inside the `server` or `ue` namespace."""
        ns = {"server": self.server_ns, "ue": self.ue_ns}[side]
        return ["ip", "netns", "exec", ns]

    def shape(self, rate_bps: float, side: str = "ue") -> dict:
        """Shape the egress of one side (`ue` = uplink, `server` = downlink) with tbf at `rate_bps`."""
        ns, dev = (self.ue_ns, self.ue_if) if side == "ue" else (self.server_ns, self.server_if)
        p = tbf_params(rate_bps)
        r = subprocess.run(["tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "tbf",
                            "rate", f"{int(rate_bps)}bit", "burst", str(p["burst"]),
                            "limit", str(p["limit"])], capture_output=True, text=True)
        if r.returncode:
            raise UserError(f"tc tbf on {dev} in {ns}: {r.stderr.strip()}")
        return p

    def unshape(self, side: str = "ue") -> None:
        ns, dev = (self.ue_ns, self.ue_if) if side == "ue" else (self.server_ns, self.server_if)
        subprocess.run(["tc", "-n", ns, "qdisc", "del", "dev", dev, "root"], capture_output=True)

    def qdisc_stats(self, side: str = "ue") -> dict:
        """Bytes/packets sent and dropped by the root qdisc (to check that shaping dropped nothing)."""
        ns, dev = (self.ue_ns, self.ue_if) if side == "ue" else (self.server_ns, self.server_if)
        r = subprocess.run(["tc", "-n", ns, "-s", "-j", "qdisc", "show", "dev", dev],
                           capture_output=True, text=True, check=True)
        for q in json.loads(r.stdout or "[]"):
            if q.get("root"):
                return {"kind": q.get("kind"), "bytes": q.get("bytes", 0),
                        "packets": q.get("packets", 0), "drops": q.get("drops", 0)}
        return {}


# A plain TCP transfer between the namespaces: calibrates the shaped link without gRPC.
_RAW_SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 0)); s.listen(1)
print(s.getsockname()[1], flush=True)
c, _ = s.accept()
n = int.from_bytes(c.recv(8, socket.MSG_WAITALL), "big")
buf = bytearray(1 << 20); view = memoryview(buf); got = 0
while got < n:
    k = c.recv_into(view, min(len(buf), n - got))
    if not k: sys.exit("raw server: peer closed early")
    got += k
c.sendall(b"k"); c.close()
"""

_RAW_CLIENT = r"""
import socket, sys, time, json
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = bytes(n)
s = socket.create_connection((host, port), timeout=120)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
t0 = time.perf_counter()
s.sendall(n.to_bytes(8, "big") + data)
assert s.recv(1) == b"k"
print(json.dumps({"seconds": time.perf_counter() - t0, "bytes": n + 8}))
"""


@dataclass
class Transfer:
    bytes: int
    seconds: float


def raw_transfer(link: NetnsLink, nbytes: int, timeout: float = 120.0) -> Transfer:
    """Send `nbytes` over TCP from the UE namespace to the server namespace; time until the ack."""
    server = subprocess.Popen(link.prefix("server") + [sys.executable, "-c", _RAW_SERVER, SERVER_ADDR],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = server.stdout.readline().strip()
        if not port.isdigit():
            raise RuntimeError(f"raw transfer server did not start: {server.stderr.read()}")
        r = subprocess.run(link.prefix("ue") + [sys.executable, "-c", _RAW_CLIENT, SERVER_ADDR, port,
                                                str(nbytes)],
                           capture_output=True, text=True, timeout=timeout)
        if r.returncode:
            raise RuntimeError(f"raw transfer client failed: {r.stderr.strip()}")
        out = json.loads(r.stdout)
        server.wait(timeout=10)
        return Transfer(out["bytes"], out["seconds"])
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def estimate_seconds(nbytes: float, rate_bps: float) -> float:
    """The estimate under test: bytes x 8 / rate."""
    return nbytes * 8.0 / rate_bps


# ---------------------------------------------------------------------------------------------
# the experiment with the real processes


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "splitinfer.common.cli", *args]


@dataclass
class Row:
    rate_mbps: float
    split: int
    tensors: int
    encoded_bytes: float
    frames: int
    measured_ms: float
    measured_min_ms: float
    estimate_ms: float
    ratio: float
    tcp_ratio: float
    drops: int


def device_args(address: str, image, split: int, codec: str, frames: int, out_dir, name: str,
                anchor=None) -> list[str]:
    """`splitinfer device` options for one measured run: one image, `frames` times, one reply at a time."""
    model = ["-anchor", str(anchor)] if anchor else []
    return [*model, "--server", address, "-s", str(image), "-loop", str(frames), "--split", str(split),
            "-encode_algo", codec, "-results_dir", str(out_dir), "-results_filename", os.path.join(str(out_dir), name),
            "-no_CPU_anchor", "-no_GPU_anchor", "--no-overlay", "--in-flight", "1", "--threads", "1"]


def run_device(link: NetnsLink, address: str, image, split: int, codec: str, frames: int, out_dir,
               anchor=None, timeout: float = 600.0) -> ResultRow:
    """One `splitinfer device` run in the UE namespace; its results row (one source), read typed."""
    from pathlib import Path

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"netexp_split{split}.csv"
    argv = link.prefix("ue") + _cli("device", *device_args(address, image, split, codec, frames, out_dir, name, anchor))
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if r.returncode:
        raise UserError(f"the UE process failed at split {split} (exit {r.returncode}): "
                        f"{(r.stderr or r.stdout).strip()[-1500:]}")
    path = out_dir / name
    if not path.is_file():
        raise UserError(f"the UE process wrote no results file {path}")
    rows = read_results(path)
    if not rows or rows[-1].encoded_bytes is None or rows[-1].transfer_ms is None:
        raise UserError(f"{path}: no result row with encoded bytes and transfer times")
    return rows[-1]


def run_experiment(rates_bps, splits, *, models=None, model_id: str = "nanodet", image=None, codec: str = "none",
                   frames: int = 3, out_dir, calibrate_bytes: int = 4_000_000, progress: bool = True) -> list[Row]:
    """For each rate (tbf on the uplink) and split: the UE's measured transfer time vs bytes x 8 / rate."""
    from pathlib import Path

    from splitinfer.common.core.progress import bar as tqdm

    from splitinfer.common.assets import MODELS_DIR, bundled_images

    models = Path(models or MODELS_DIR)
    anchor = models / model_id / "model.onnx"
    if not anchor.is_file():
        raise UserError(f"model {model_id!r} not found in the repository {models} (no {anchor})")
    image = Path(image) if image else bundled_images()[0]
    out_dir = Path(out_dir)
    rows: list[Row] = []
    if os.geteuid() != 0:
        raise UserError("network namespaces need root (CAP_SYS_ADMIN, CAP_NET_ADMIN)")
    bar = tqdm(total=len(rates_bps) * len(splits), desc="netexp", unit="run", disable=not progress)
    with NetnsLink() as link:
        server = ServerProcess(models, host=SERVER_ADDR, threads=1, argv_prefix=link.prefix("server"))
        try:
            for rate in rates_bps:
                link.shape(rate)
                cal = raw_transfer(link, calibrate_bytes)
                tcp_ratio = cal.seconds / estimate_seconds(cal.bytes, rate)
                for split in splits:
                    before = link.qdisc_stats().get("drops", 0)
                    row = run_device(link, server.address, image, split, codec, frames,
                                     out_dir / "runs" / f"{rate / 1e6:g}mbit", anchor=anchor)
                    enc_avg, t_avg = row.encoded_bytes.avg, row.transfer_ms.avg
                    est = estimate_seconds(enc_avg, rate) * 1e3
                    rows.append(Row(rate / 1e6, split, row.crossing_tensors or 0, enc_avg,
                                    row.nb_inference or frames, t_avg, row.transfer_ms.min, est, t_avg / est,
                                    tcp_ratio, link.qdisc_stats().get("drops", 0) - before))
                    bar.update(1)
        finally:
            server.stop()
            bar.close()
    return rows


def write_csv(rows: list[Row], path) -> None:
    import csv
    from dataclasses import asdict, fields

    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=[f.name for f in fields(Row)])
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in asdict(r).items()})


def plot(rows: list[Row], path) -> None:
    """Measured transfer time against bytes x 8 / rate, one colour per rate, the y = x line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    for rate in sorted({r.rate_mbps for r in rows}):
        sel = [r for r in rows if r.rate_mbps == rate]
        ax.scatter([r.estimate_ms for r in sel], [r.measured_ms for r in sel], label=f"{rate:g} Mbit/s", zorder=3)
        for r in sel:
            ax.annotate(f"rank {r.split}", (r.estimate_ms, r.measured_ms), fontsize=7,
                        textcoords="offset points", xytext=(4, -8))
    hi = max([r.estimate_ms for r in rows] + [r.measured_ms for r in rows]) * 1.08
    ax.plot([0, hi], [0, hi], "k--", lw=1, label="measured = bytes x 8 / rate")
    ax.fill_between([0, hi], [0, hi * 0.85], [0, hi * 1.15], color="0.85", alpha=0.5, label="±15%")
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_xlabel("estimate: encoded bytes x 8 / rate (ms)")
    ax.set_ylabel("measured transfer time on the UE (ms)")
    ax.set_title("Transfer over a tbf-shaped veth link (uplink)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
