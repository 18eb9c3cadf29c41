"""Records of the benchmarks: the worker's result line, JSON lines files, the markdown table
rows and the median / peak summary over repeats."""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics

RESULT_TAG = "RESULT "  # worker stdout line carrying its JSON result
MIB = 1024.0 * 1024.0


# --------------------------------------------------------------------------- shared by the standalone scripts


def rss_mib() -> float:
    """This process's resident memory now (MiB, /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB


def peak_mib() -> float:
    """This process's peak resident memory so far (MiB, ru_maxrss)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def parse_size(text: str) -> tuple[int, int]:
    """'96' -> (96, 96); '375x500' -> (375, 500) (height x width); an argparse type."""
    parts = text.lower().split("x")
    if len(parts) == 1:
        return int(parts[0]), int(parts[0])
    if len(parts) == 2:
        return int(parts[0]), int(parts[1])
    raise argparse.ArgumentTypeError(f"size {text!r}: give H or HxW")


def append_jsonl(path: str | os.PathLike, records: list[dict]) -> None:
    """Append one JSON object per line to `path` (the --json FILE of every benchmark)."""
    with open(path, "a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records))


def _max_or_none(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return max(values) if values else None


def _median_or_none(values: list, images: int) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) / images if values and images else None


def summarise(runs: list[dict]) -> dict:
    """Median seconds / images per second over repeats; memory = max over repeats."""
    secs = [r["seconds"] for r in runs]
    med = statistics.median(secs)
    return {
        "images": runs[0]["images"], "seconds": secs, "median_s": med,
        "images_per_s": runs[0]["images"] / med if med > 0 else None,
        "cpu_s_per_image": _median_or_none([r.get("cpu_s") for r in runs], runs[0]["images"]),
        "rss_mib": max(r["rss_mib"] for r in runs),
        "hwm_before_run_mib": _max_or_none([r.get("hwm_before_run_mib") for r in runs]),
        "children_rss_mib": _max_or_none([r.get("children_rss_mib") for r in runs]),
        "tracemalloc_peak_mib": _max_or_none([r.get("tracemalloc_peak_mib") for r in runs]),
        "cuda_peak_mib": _max_or_none([r.get("cuda_peak_mib") for r in runs]),
        "device": runs[0].get("device"), "torch": runs[0].get("torch"), "gpu": runs[0].get("gpu"),
    }  # fmt: skip


def table_header() -> str:
    return (
        "| step | variant | device | threads | images | size | repeats | median s | images/s | speed-up vs naive "
        "| CPU s/image | peak RSS MiB | RSS after imports MiB | pool RSS MiB | tracemalloc MiB |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )


def _fmt(v, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def table_row(step: str, variant: str, args, s: dict, speedup: float | None) -> str:
    return (
        f"| {step} | {variant} | {s['device']} | {args.threads} | {s['images']} | {args.size} | {len(s['seconds'])} "
        f"| {_fmt(s['median_s'])} | {_fmt(s['images_per_s'])} | {_fmt(speedup)}x | {_fmt(s['cpu_s_per_image'], 3)} "
        f"| {_fmt(s['rss_mib'], 0)} "
        f"| {_fmt(s['hwm_before_run_mib'], 0)} | {_fmt(s['children_rss_mib'], 0)} | {_fmt(s['tracemalloc_peak_mib'])} |"
    )
