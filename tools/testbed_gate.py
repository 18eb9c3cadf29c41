#!/usr/bin/env python
"""Check the testbed gate of study 2 (docs/study_em3.md, "Stage 0") on finished round-0 runs.

Usage:
    python tools/testbed_gate.py --run LABEL=RUN_DIR[,CONTROL_RUN_DIR] ... [--csv out.csv]

RUN_DIR is a run folder with round 0 finished (`snakemake round0 ...`); CONTROL_RUN_DIR, when
given, is the same configuration with `dataset.synthetic.control: true` and at least its
round-0 CAM confounding (`results/<run>/round0/confounding_cam.json`). Prints one markdown row
per run: CAM, best CAM, pseudo-mask, seg train, seg val, the CAM pair confusion (and the
control's), and the gates

    G1 cf_cam_pair >= 10 x the control's     G2 pseudo-mask >= best CAM + 5
    G3 seg train >= pseudo-mask              G4 seg val >= pseudo-mask - 5
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

COLUMNS = ["cam_miou", "cam_best_miou", "pseudo_mask_miou", "seg_train_miou", "seg_val_miou", "cf_cam_pair"]


def cam_pair(run_dir: Path) -> float:
    return float(json.loads((run_dir / "round0" / "confounding_cam.json").read_text())["pair_confusion_mean"])


def gate_row(label: str, run_dir: Path, control: Path | None) -> dict:
    s = pd.read_csv(run_dir / "round0" / "summary.csv").iloc[0]
    row = {"config": label, **{c: float(s[c]) for c in COLUMNS}}
    row["cf_cam_pair_control"] = cam_pair(control) if control else float("nan")
    row["G1"] = bool(control) and row["cf_cam_pair"] >= 10 * row["cf_cam_pair_control"]
    row["G2"] = row["pseudo_mask_miou"] >= row["cam_best_miou"] + 5
    row["G3"] = row["seg_train_miou"] >= row["pseudo_mask_miou"]
    row["G4"] = row["seg_val_miou"] >= row["pseudo_mask_miou"] - 5
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", required=True, help="LABEL=RUN_DIR[,CONTROL_RUN_DIR]")
    ap.add_argument("--csv", type=Path, default=None)
    args = ap.parse_args()
    rows = []
    for spec in args.run:
        label, dirs = spec.split("=", 1)
        parts = dirs.split(",")
        rows.append(gate_row(label, Path(parts[0]), Path(parts[1]) if len(parts) > 1 else None))
    df = pd.DataFrame(rows)
    if args.csv:
        df.to_csv(args.csv, index=False)
    print("| config | CAM | best CAM | pseudo-mask | seg train | seg val | CAM pair (control) | G1 | G2 | G3 | G4 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    yes = {True: "yes", False: "**no**"}
    for r in rows:
        ctrl = "—" if r["cf_cam_pair_control"] != r["cf_cam_pair_control"] else f"{r['cf_cam_pair_control']:.4f}"
        print(
            f"| {r['config']} | {r['cam_miou']:.2f} | {r['cam_best_miou']:.2f} | {r['pseudo_mask_miou']:.2f} | "
            f"{r['seg_train_miou']:.2f} | {r['seg_val_miou']:.2f} | {r['cf_cam_pair']:.3f} ({ctrl}) | "
            f"{yes[r['G1']] if ctrl != '—' else '—'} | {yes[r['G2']]} | {yes[r['G3']]} | {yes[r['G4']]} |"
        )


if __name__ == "__main__":
    main()
