"""Where sweep tasks run: in this process, on a local pool of spawned processes, or as Ray tasks.

Every runner has `name`, `run(tasks, on_done)` (calls `on_done(result)` as each task ends) and
`close(abort)` (abort: stop at once, killing our own workers).
"""

from __future__ import annotations

import os
from pathlib import Path

from splitinfer.common.core.errors import UserError
from splitinfer.common.studies.sweep.cache import activation_path, load_activations
from splitinfer.common.studies.sweep.tasks import init_worker, run_task, task_tensors


class _InProcess:
    name = "in-process"

    def run(self, tasks, on_done):
        for t in tasks:
            on_done(run_task(t))

    def close(self, abort: bool = False):
        pass


class _ProcessPool:
    """Local pool of spawned processes (spawn, not fork: onnxruntime's threads do not survive fork)."""

    def __init__(self, workers: int, tmp_root: Path):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        self.name = f"process pool ({workers} workers)"
        tmp_root.mkdir(parents=True, exist_ok=True)
        self.tmp_root = tmp_root
        self.ex = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                      initializer=init_worker, initargs=(str(tmp_root),))

    def run(self, tasks, on_done):
        from concurrent.futures import FIRST_COMPLETED, wait

        pending = {self.ex.submit(run_task, t) for t in tasks}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                on_done(f.result())

    def close(self, abort: bool = False):
        if abort:  # stop at once: kill our own workers rather than wait for their running tasks
            procs = list((getattr(self.ex, "_processes", None) or {}).values())
            self.ex.shutdown(wait=False, cancel_futures=True)
            for p in procs:
                if p.is_alive():
                    _terminate_group(p)
            for p in procs:
                p.join(timeout=5)
        else:
            self.ex.shutdown(wait=True)
        import shutil

        shutil.rmtree(self.tmp_root, ignore_errors=True)


def _terminate_group(proc) -> None:
    """SIGTERM to a pool worker and to the helper processes it started (its own process group, see
    `init_worker`), so no helper is left writing into the pipe of a worker that is gone."""
    import signal

    try:
        if hasattr(os, "killpg") and os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, signal.SIGTERM)
            return
    except (ProcessLookupError, PermissionError):
        pass
    proc.terminate()


class _Ray:
    """Ray tasks, one per (image batch, split, codec); data travels through the object store, so
    workers need no shared file system (only splitinfer installed)."""

    def __init__(self, address: str, workers: int | None, act_dir: Path):
        try:
            import ray
        except ImportError:
            raise UserError("--ray-address needs the 'ray' package (pip install 'splitinfer[ray]')") from None
        self.ray = ray
        self.act_dir = act_dir
        self.started = not ray.is_initialized()
        if self.started:
            kw = {"include_dashboard": False, "log_to_driver": False, "ignore_reinit_error": True}
            if address == "local":
                kw["num_cpus"] = workers or os.cpu_count()
            else:
                kw["address"] = address
            try:
                ray.init(**kw)
            except Exception as exc:
                hint = ("; a cluster started with `ray start` (Ray >= 2.59) wants token auth: set "
                        "RAY_AUTH_MODE=token here too" if os.environ.get("RAY_AUTH_MODE") != "token" else "")
                raise UserError(f"cannot connect to Ray at {address!r}: {exc}{hint}") from None
        self.remote = ray.remote(num_cpus=1)(run_task)
        cpus = int(ray.cluster_resources().get("CPU", 0))
        self.name = f"Ray ({address}, {cpus} CPUs)"

    def run(self, tasks, on_done):
        ray = self.ray
        acts, parts = {}, {}
        refs = {}
        for t in tasks:
            akey = (t["rank"], t["batch"], len(t["images"]))  # a sequential row's one batch holds every frame
            if akey not in acts:
                sent = task_tensors(t)
                batch = {}
                for name, sha in t["images"]:
                    got = load_activations(activation_path(self.act_dir, name), sha, sent)
                    if got is None:
                        raise RuntimeError(f"activation cache for {name} vanished")
                    batch[name] = got
                acts[akey] = ray.put(batch)
            if t["part2_key"] not in parts:
                parts[t["part2_key"]] = ray.put(Path(t["part2_path"]).read_bytes())
            refs[self.remote.remote(t, acts[akey], parts[t["part2_key"]])] = t
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for r in done:
                on_done(ray.get(r))

    def close(self, abort: bool = False):
        if self.started:
            self.ray.shutdown()


def make_runner(ray_address: str | None, ray_workers: int | None, workers: int, n_tasks: int, act_dir: Path,
                tmp_root: Path):
    """Ray when an address is given, else this process (`workers == 0`), else a pool of at most
    `n_tasks` spawned workers with private temp folders under `tmp_root`."""
    if ray_address:
        return _Ray(ray_address, ray_workers, act_dir)
    if workers == 0:
        return _InProcess()
    return _ProcessPool(min(workers, n_tasks), tmp_root)
