#!/usr/bin/env python
"""Bring a study's new measures files from the clone that runs it into this checkout.

    python tools/study_collect.py <clone> studies/<name> [--commit] [--watch SECONDS]

A study pinned to a commit (study.yaml `commit`, docs/context.md "Running a study") runs in a
clone at that commit while this checkout moves on; its record is the measures files, one per
finished run. This copies every measures file of <clone>/studies/<name>/measures/ that this
checkout lacks into studies/<name>/measures/ (atomically), after checking it: a CSV whose
first columns are run, condition, seed, replicate, round, whose rows all name the run of its
file name, and whose run, condition, seed and replicate are a row of this checkout's sheet
(studies/<name>/runs.tsv); a file that fails stops the tool with its path and the reason.
A file present on both sides with other content is an error, never overwritten.

--commit: commit each new file on its own (`git commit -- <file>`, message "Study <name>:
measures of <run>"), leaving everything else staged or not as it was.
--watch S: repeat every S seconds until every run of the sheet has its measures file here
(for a study running in the background); without it, one pass.

Prints one line per file brought in, and the number of runs still without measures.
"""

from __future__ import annotations

import argparse
import csv
import filecmp
import shutil
import subprocess
import sys
import time
from pathlib import Path

META = ["run", "condition", "seed", "replicate", "round"]


class CollectError(RuntimeError):
    pass


def sheet_runs(study: Path) -> dict[str, tuple[str, str, str]]:
    """run -> (condition, seed, replicate) of the study's sheet (the study.yaml's `sheet`,
    default runs.tsv; '#' lines skipped)."""
    import yaml

    sheet = study / (yaml.safe_load((study / "study.yaml").read_text()).get("sheet") or "runs.tsv")
    with open(sheet, newline="") as f:
        rows = csv.DictReader((line for line in f if line.strip() and not line.startswith("#")), delimiter="\t")
        return {r["run"].strip(): (r["condition"].strip(), r["seed"].strip(), r["replicate"].strip()) for r in rows}


def check_measures(path: Path, runs: dict[str, tuple[str, str, str]]) -> None:
    """CollectError naming `path` unless it is a measures file of one of `runs` (see above)."""
    run = path.stem
    if run not in runs:
        raise CollectError(f"{path}: run {run} is not in the study's sheet")
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise CollectError(f"{path}: not a readable CSV ({e})") from None
    if len(rows) < 2 or rows[0][: len(META)] != META:
        raise CollectError(f"{path}: expected a header starting {','.join(META)} and at least one row")
    condition, seed, replicate = runs[run]
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(rows[0]):
            raise CollectError(f"{path}: line {i} has {len(row)} fields, the header {len(rows[0])}")
        if row[:4] != [run, condition, seed, replicate]:
            raise CollectError(
                f"{path}: line {i} is run {row[0]}, condition {row[1]}, seed {row[2]}, replicate {row[3]}; "
                f"the sheet has {run}, {condition}, {seed}, {replicate}"
            )


def git_commit(repo: Path, file: Path, message: str) -> None:
    rel = str(file.resolve().relative_to(repo.resolve()))
    subprocess.run(["git", "-C", str(repo), "add", "--", rel], check=True)
    subprocess.run(["git", "-C", str(repo), "commit", "-q", "-m", message, "--", rel], check=True)


def collect_once(clone: Path, study: Path, commit: bool, repo: Path) -> tuple[list[str], int]:
    """One pass: (the runs brought in, the number of sheet runs still without measures here)."""
    runs = sheet_runs(study)
    source, target = clone / study / "measures", study / "measures"
    target.mkdir(parents=True, exist_ok=True)
    brought = []
    for src in sorted(source.glob("*.csv")) if source.is_dir() else []:
        dst = target / src.name
        if dst.exists():
            if not filecmp.cmp(src, dst, shallow=False):
                raise CollectError(f"{src} differs from {dst}, which is kept: compare them by hand")
            continue
        check_measures(src, runs)
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.copyfile(src, tmp)
        tmp.replace(dst)
        if commit:
            git_commit(repo, dst, f"Study {study.name}: measures of {src.stem}")
        brought.append(src.stem)
    missing = sum(not (target / f"{r}.csv").exists() for r in runs)
    return brought, missing


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("clone", type=Path, help="the checkout that runs the study")
    p.add_argument("study", type=Path, help="the study's folder, relative to both checkouts (studies/<name>)")
    p.add_argument("--commit", action="store_true", help="commit each new measures file on its own")
    p.add_argument("--watch", type=float, default=None, metavar="SECONDS", help="repeat until every run is here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.study.is_absolute():
        print("study_collect: give the study folder relative to the checkouts (studies/<name>)", file=sys.stderr)
        return 2
    if not (args.study / "study.yaml").exists():
        print(f"study_collect: {args.study}/study.yaml does not exist here", file=sys.stderr)
        return 2
    repo = Path.cwd()
    while True:
        try:
            brought, missing = collect_once(args.clone, args.study, args.commit, repo)
        except (CollectError, subprocess.CalledProcessError) as e:
            print(f"study_collect: {e}", file=sys.stderr)
            return 1
        for run in brought:
            print(f"{args.study / 'measures' / run}.csv: brought in" + (" and committed" if args.commit else ""))
        if args.watch is None or missing == 0:
            print(f"{missing} run(s) of the sheet without measures here", flush=True)
            return 0
        time.sleep(args.watch)


if __name__ == "__main__":
    sys.exit(main())
