"""The measuring harness of the per-step benchmarks (benchmarks/bench_*.py); their inputs
are in fixtures.py, their records (JSON lines, table rows) in records.py.

Each benchmark script defines a `Step`: how to build a FIXED input set (synthetic images
from conta_core.data.synthetic with a fixed seed, random-init models with a fixed seed,
CAMs derived from the GT masks) and two or more variants of the step: "naive" (the
reference loop: one image, one scale, one flip at a time, dense random walk, one process)
and "fast" (the production function of conta_core). `main(step)` then

1. builds the inputs once in a temporary folder, in a subprocess (`spec.json` describes
   them); the orchestrating process itself never imports torch (see "orchestration");
2. runs every variant `--repeat` times, alternating the variants (naive, fast, naive, ...)
   so that load from other processes on a shared machine hits both alike; every run is a
   fresh subprocess, so its peak RSS (resource.getrusage ru_maxrss) is that variant's own;
   the CRF pool's children are sampled from /proc (ChildSampler);
3. in the first run of each variant, after the timed pass, runs the step once more under
   tracemalloc for the peak of Python-tracked allocations (numpy included, torch tensors not);
4. prints one markdown table row per variant (median images/s over the repeats, peak RSS,
   tracemalloc peak, speed-up of each variant over "naive") and, with --json FILE,
   appends one JSON object per line to FILE.

--shards 2 adds the variant "fast_x2": the fast variant as 2 concurrent processes, each on
half the images (conta_core.infra.shards.shard_ids) with --threads // 2 threads, as Snakemake
runs 2 shards side by side; its time is the wall time from the common start (a file
barrier after imports) to the last finish.

Command line (every bench_*.py):
  python benchmarks/bench_X.py [--images 8] [--size 96] [--device auto|cpu|cuda]
      [--repeat 3] [--threads 2] [--variants naive,fast] [--shards 1|2] [--no-trace]
      [--json results.jsonl] [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from records import RESULT_TAG, append_jsonl, summarise, table_header, table_row

BARRIER_POLL_S = 0.01
BARRIER_TIMEOUT_S = 600.0
MIB = 1024.0 * 1024.0

RunFn = Callable[[dict, list, Path, "object", int], None]  # (spec, ids, out_dir, device, threads)


@dataclass
class Step:
    """One benchmarked pipeline step.

    name: table label; prepare(workdir, args) -> spec (JSON-able dict; must contain
    "manifest"); variants: name -> run(spec, ids, out_dir, device, threads), which must
    process every id and write its outputs under out_dir (a fresh empty folder per run).
    """

    name: str
    prepare: Callable[[Path, argparse.Namespace], dict]
    variants: dict[str, RunFn] = field(default_factory=dict)
    per_image: bool = True  # streaming per-image step (RESULTS.md memory table)


# Imported by every worker before the clock starts, so that no variant pays for a first
# import of the code the other one has already loaded (the variants import lazily).
PRELOAD = (
    "conta_core.steps.cam", "conta_core.steps.confounder", "conta_core.models.context", "conta_core.data.xm", "conta_core.steps.crf",
    "conta_core.data.artifacts", "conta_core.data.manifest", "conta_core.data.transforms",
    "conta_core.infra.fileio", "conta_core.steps.ir_label", "conta_core.steps.irn", "conta_core.models.classifier",
    "conta_core.models.deeplab", "conta_core.models.irn", "conta_core.steps.random_walk", "conta_core.steps.segment",
)  # fmt: skip


# --------------------------------------------------------------------------- machine


def machine_info() -> dict:
    """CPU model, core count and Python version (torch-free: the orchestrator stays small)."""
    from conta_core.report.run_digest import cpuinfo_field

    cpu = cpuinfo_field("model name") or platform.processor() or "unknown"
    return {"cpu": cpu, "nproc": os.cpu_count(), "python": platform.python_version()}


def torch_info(device) -> dict:
    """torch version and the CUDA device name (worker side)."""
    import torch

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"torch": torch.__version__, "gpu": gpu, "device": str(device)}


def _proc_status_mib(pid: int | str, key: str) -> float | None:
    """VmHWM / VmRSS of a process from /proc/<pid>/status in MiB (None if unreadable)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return None


class ChildSampler:
    """Background thread summing the peak RSS (VmHWM) of this process's children (CRF pool).

    resource.getrusage(RUSAGE_CHILDREN) cannot be used: importing torch runs a child process
    whose peak (~450 MiB) would mask the pool workers'.
    """

    def __init__(self, period_s: float = 0.05) -> None:
        import threading

        self.period_s, self.peaks, self._stop = period_s, {}, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _children(self) -> list[str]:
        try:
            return [c for t in Path("/proc/self/task").iterdir() for c in (t / "children").read_text().split()]
        except OSError:
            return []

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in self._children():
                hwm = _proc_status_mib(pid, "VmHWM")
                if hwm is not None:
                    self.peaks[pid] = max(hwm, self.peaks.get(pid, 0.0))
            self._stop.wait(self.period_s)

    def __enter__(self) -> ChildSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def total_mib(self) -> float | None:
        total = sum(self.peaks.values())
        return total if total > 0 else None


def resolve_device(name: str):
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available on this machine")
    return torch.device(name)


# --------------------------------------------------------------------------- worker


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _wait_barrier(barrier: Path, num: int, shard: int) -> None:
    """File barrier: every shard process announces itself, then waits for all `num`."""
    barrier.mkdir(parents=True, exist_ok=True)
    (barrier / f"ready_{shard}").touch()
    deadline = time.monotonic() + BARRIER_TIMEOUT_S
    while len(list(barrier.glob("ready_*"))) < num:
        if time.monotonic() > deadline:
            raise SystemExit(f"barrier {barrier}: only some of {num} shard processes started")
        time.sleep(BARRIER_POLL_S)


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its reaped children (the CRF pool)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_worker(step: Step, args: argparse.Namespace) -> None:
    """One measured run of one variant (in its own process); prints RESULT {json}."""
    import torch

    from conta_core.infra.shards import shard_ids

    for module in PRELOAD:
        importlib.import_module(module)
    torch.set_num_threads(max(1, args.threads))
    spec = json.loads(Path(args.spec).read_text())
    device = resolve_device(args.device)
    ids = shard_ids(spec["ids"], args.shard, args.num_shards)
    run = step.variants[args.worker]
    out = Path(args.out_root)
    if args.barrier:
        _wait_barrier(Path(args.barrier), args.num_shards, args.shard)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    base = _proc_status_mib("self", "VmHWM")
    cpu0 = _cpu_seconds()
    t0 = time.time()
    start = time.perf_counter()
    with ChildSampler() as children:
        run(spec, ids, out / "timed", device, args.threads)
        _sync(device)
    seconds = time.perf_counter() - start
    t1 = time.time()
    result = {
        "seconds": seconds, "start": t0, "end": t1, "images": len(ids), "cpu_s": _cpu_seconds() - cpu0,
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "hwm_mib": _proc_status_mib("self", "VmHWM"), "hwm_before_run_mib": base,
        "children_rss_mib": children.total_mib,
        "cuda_peak_mib": torch.cuda.max_memory_allocated(device) / MIB if device.type == "cuda" else None,
        **torch_info(device),
    }  # fmt: skip
    if args.trace_pass:
        tracemalloc.start()
        run(spec, ids, out / "traced", device, args.threads)
        result["tracemalloc_peak_mib"] = tracemalloc.get_traced_memory()[1] / MIB
        tracemalloc.stop()
    print(RESULT_TAG + json.dumps(result), flush=True)


# --------------------------------------------------------------------------- orchestration
# The orchestrating process never imports torch: a child started by vfork + exec inherits
# its parent's peak RSS in ru_maxrss, so a heavy parent would mask the workers' own peaks.


def run_prepare(step: Step, args: argparse.Namespace) -> None:
    """Build the inputs in args.prepare_into and write spec.json there (own process)."""
    work = Path(args.prepare_into)
    spec = step.prepare(work, args)
    spec["ids"] = list(spec["ids"])
    (work / "spec.json").write_text(json.dumps(spec))


def _worker_cmd(script: str, args: argparse.Namespace, variant: str, spec: Path, out: Path, threads: int,
                trace: bool, shard: int = 0, num_shards: int = 1, barrier: Path | None = None) -> list[str]:  # fmt: skip
    cmd = [sys.executable, script, "--worker", variant, "--spec", str(spec), "--out-root", str(out),
           "--device", args.device, "--threads", str(threads), "--shard", str(shard),
           "--num-shards", str(num_shards)]  # fmt: skip
    if trace:
        cmd.append("--trace-pass")
    if barrier is not None:
        cmd += ["--barrier", str(barrier)]
    return cmd


def _parse_result(proc: subprocess.CompletedProcess, what: str) -> dict:
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG) :])
    raise SystemExit(f"{what} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")


def _child_env(threads: int) -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONHASHSEED="0")
    return env


def run_variant_once(script: str, args, variant: str, spec: Path, out: Path, trace: bool) -> dict:
    cmd = _worker_cmd(script, args, variant, spec, out, args.threads, trace)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_child_env(args.threads))
    return _parse_result(proc, f"{variant} run")


def run_sharded_once(script: str, args, spec: Path, out: Path, trace: bool) -> dict:
    """The fast variant as args.shards concurrent processes; wall time from common start to last end."""
    n = args.shards
    threads = max(1, args.threads // n)
    barrier = out / "barrier"
    procs = [
        subprocess.Popen(_worker_cmd(script, args, "fast", spec, out / f"shard{k}", threads, trace, k, n, barrier),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_child_env(threads))
        for k in range(n)
    ]  # fmt: skip
    results = []
    for k, p in enumerate(procs):
        stdout, stderr = p.communicate()
        results.append(_parse_result(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr), f"shard {k}"))
    merged = dict(results[0])
    merged.update(
        seconds=max(r["end"] for r in results) - min(r["start"] for r in results),
        images=sum(r["images"] for r in results),
        rss_mib=sum(r["rss_mib"] for r in results),
        hwm_mib=sum(r["hwm_mib"] or 0.0 for r in results),
        hwm_before_run_mib=sum(r["hwm_before_run_mib"] or 0.0 for r in results),
        children_rss_mib=sum(r["children_rss_mib"] or 0.0 for r in results) or None,
        cpu_s=sum(r.get("cpu_s") or 0.0 for r in results),
        shard_threads=threads,
    )
    if trace:
        merged["tracemalloc_peak_mib"] = sum(r.get("tracemalloc_peak_mib", 0.0) for r in results)
    return merged


def build_parser(step: Step) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=f"benchmark: {step.name} (naive reference loop vs fast path)")
    p.add_argument("--images", type=int, default=8, help="number of images (default 8)")
    p.add_argument("--size", type=int, default=96, help="image side in pixels (default 96)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:K")
    p.add_argument("--repeat", type=int, default=3, help="runs per variant; the median is reported")
    p.add_argument("--threads", type=int, default=2, help="torch threads / CRF worker processes per run")
    p.add_argument("--variants", default=",".join(step.variants), help="comma-separated subset to run")
    p.add_argument("--shards", type=int, default=1, help="2: also time the fast variant as 2 parallel shards")
    p.add_argument("--no-trace", dest="trace", action="store_false", help="skip the tracemalloc pass")
    p.add_argument("--json", default=None, help="append one JSON object per variant to this file")
    p.add_argument(
        "--keep", default=None, help="build inputs/outputs in a new folder under DIR (created if missing) and keep them"
    )
    p.add_argument("--header", action="store_true", help="print the markdown table header first")
    # internal flags (subprocesses)
    p.add_argument("--prepare-into", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out-root", default=None, help=argparse.SUPPRESS)
    p.add_argument("--shard", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--num-shards", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--barrier", default=None, help=argparse.SUPPRESS)
    p.add_argument("--trace-pass", action="store_true", help=argparse.SUPPRESS)
    return p


def _prepare_subprocess(script: str, args, work: Path) -> Path:
    cmd = [sys.executable, script, "--prepare-into", str(work), "--images", str(args.images),
           "--size", str(args.size)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_child_env(args.threads))
    if proc.returncode != 0:
        raise SystemExit(f"preparing the inputs failed:\n{proc.stderr[-6000:]}")
    return work / "spec.json"


def main(step: Step, script: str) -> None:
    """CLI entry of a benchmark script (see the module docstring)."""
    args = build_parser(step).parse_args()
    if args.prepare_into:
        run_prepare(step, args)
        return
    if args.worker:
        run_worker(step, args)
        return
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in step.variants]
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; choose from {list(step.variants)}")
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
        tmp_cm = contextlib.nullcontext(tempfile.mkdtemp(prefix=f"bench_{step.name}_", dir=args.keep))
    else:
        tmp_cm = tempfile.TemporaryDirectory(prefix=f"bench_{step.name}_")
    with tmp_cm as tmp:
        work = Path(tmp)
        if args.keep:
            print(f"inputs and outputs kept in {work}", file=sys.stderr)
        t0 = time.perf_counter()
        spec_path = _prepare_subprocess(script, args, work)
        prep_s = time.perf_counter() - t0
        runs: dict[str, list[dict]] = {v: [] for v in variants}
        if args.shards > 1:
            runs[f"fast_x{args.shards}"] = []
        for r in range(args.repeat):
            for v in runs:
                out = work / "out" / f"{v}_{r}"
                trace = args.trace and r == 0
                if v.startswith("fast_x"):
                    runs[v].append(run_sharded_once(script, args, spec_path, out, trace))
                else:
                    runs[v].append(run_variant_once(script, args, v, spec_path, out, trace))
    summaries = {v: summarise(rs) for v, rs in runs.items()}
    base = summaries.get("naive", {}).get("images_per_s")
    if args.header:
        print(table_header())
    info = machine_info()
    stamp = dt.datetime.now().isoformat(timespec="seconds")
    for v, s in summaries.items():
        speedup = s["images_per_s"] / base if base and s["images_per_s"] else None
        print(table_row(step.name, v, args, s, speedup), flush=True)
        if args.json:
            rec = {"step": step.name, "variant": v, "threads": args.threads, "size": args.size, "images": args.images,
                   "device": args.device, "autocast": os.environ.get("CONTA_AUTOCAST", "1") != "0",
                   "repeat": args.repeat, "speedup_vs_naive": speedup, "prepare_s": prep_s, "date": stamp,
                   "load_avg": os.getloadavg(), "machine": info,
                   "command": " ".join(["python", *sys.argv]), **s}  # fmt: skip
            append_jsonl(args.json, [rec])
