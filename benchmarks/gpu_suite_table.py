#!/usr/bin/env python
"""The Markdown table of benchmarks/gpu_suite.sh: one row per (step, size, precision) from the
suite's JSON lines, the autocast speed-up against the fp32 row of the same step and size,
and the local GPU claim check.

CLI: python benchmarks/gpu_suite_table.py SUITE.jsonl CLAIM.txt > suite.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def rows(records: list[dict]) -> list[str]:
    fp32 = {(r["step"], r["size"]): r["images_per_s"] for r in records if not r.get("autocast")}
    out = [
        "| step | device | images | size | precision | median s | images/s | autocast vs fp32 | peak CUDA MiB | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        amp = bool(r.get("autocast")) and str(r.get("device", "")).startswith("cuda")
        base = fp32.get((r["step"], r["size"]))
        gain = f"{r['images_per_s'] / base:.2f}x" if amp and base and r.get("images_per_s") else "-"
        cuda = "-" if r.get("cuda_peak_mib") is None else f"{r['cuda_peak_mib']:.0f}"
        out.append(
            f"| {r['step']} | {r.get('device')} | {r.get('images')} | {r['size']} | "
            f"{'autocast' if amp else 'fp32'} | {r['median_s']:.3f} | {r['images_per_s']:.2f} | {gain} | "
            f"{cuda} | {r['rss_mib']:.0f} |"
        )
    return out


def main(argv: list[str]) -> None:
    records = [json.loads(line) for line in Path(argv[0]).read_text().splitlines() if line.strip()]
    if not records:
        raise SystemExit(f"{argv[0]}: no benchmark records")
    devices = sorted({str(r.get("device")) for r in records})
    gpus = sorted({str(r.get("gpu")) for r in records if r.get("gpu")})
    print(f"# GPU suite ({records[0]['date']})\n")
    print(f"Devices: {', '.join(devices)}{'; ' + ', '.join(gpus) if gpus else ''}; torch {records[0].get('torch')}.")
    if not any(d.startswith("cuda") for d in devices):
        print("No CUDA device was visible: the CPU path of the suite (fp32 only), not a GPU measurement.")
    print()
    print("\n".join(rows(records)))
    if len(argv) > 1 and Path(argv[1]).exists():
        print("\n## Local GPU claim\n\n```\n" + Path(argv[1]).read_text().rstrip() + "\n```")


if __name__ == "__main__":
    main(sys.argv[1:])
