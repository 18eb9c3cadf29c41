#!/usr/bin/env python
"""Bring a study's new measures files from the clone that runs it into this checkout.

    python tools/study_collect.py <clone> studies/<name> [--commit] [--watch SECONDS]

Run it from the top of this checkout. A study pinned to a commit (study.yaml `commit`,
docs/context.md "Running a study") runs in a clone at that commit while this checkout moves
on; its record is the measures files, one per finished run. This copies every measures file
of <clone>/studies/<name>/measures/ that this checkout lacks into studies/<name>/measures/
(atomically), after checking it: a CSV whose first columns are run, condition, seed,
replicate, round, whose rows all name the run of its file name, whose run, condition, seed
and replicate are a row of this checkout's sheet (studies/<name>/runs.tsv), with one row per
round 0..rounds, and, where it records its `commit` and the study pins one, from that commit
without changes. A file that fails stops the tool with its path and the reason. A file
present on both sides with other content is an error, never overwritten; hidden files (a
job's temporary files) are skipped. The clone must hold the study, and where the study pins
a commit the clone's HEAD must be it.

--commit: commit each measures file of the sheet that is here but not committed, each on its
own (`git commit -- <file>`, message "Study <name>: measures of <run>"), leaving everything
else staged or not as it was; a file whose commit failed is committed on the next pass.
--watch S: a pass every S seconds until every run of the sheet has its measures file here, a
line per pass; a git failure is retried on the next pass (without --watch it ends the tool).

Prints one line per file brought in or committed, and the number of runs still without
measures.
"""

from __future__ import annotations

import argparse
import csv
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conta_core.infra.config import DEFAULT_CONFIG, ConfigError, load_yaml  # noqa: E402
from conta_core.infra.study import META_COLUMNS, Study, load_study  # noqa: E402
from conta_core.infra.study import git_output as git  # noqa: E402


class CollectError(RuntimeError):
    pass


def load(study: Path) -> tuple[Study, dict[str, tuple[str, int, int]]]:
    """The study (conta_core.infra.study.load_study, every check of the workflow) and its
    sheet as run -> (condition, seed, replicate)."""
    loaded = load_study(study / "study.yaml", load_yaml(DEFAULT_CONFIG))
    return loaded, {r.name: (r.condition, r.seed, r.replicate) for r in loaded.runs}


def check_measures(path: Path, study: Study, runs: dict[str, tuple[str, int, int]]) -> None:
    """CollectError naming `path` unless it is a measures file of one of `runs` (see above)."""
    run = path.stem
    if run not in runs:
        raise CollectError(f"{path}: run {run} is not in the study's sheet")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise CollectError(f"{path}: not a readable CSV ({e})") from None
    if len(rows) < 2 or rows[0][: len(META_COLUMNS)] != META_COLUMNS:
        raise CollectError(f"{path}: expected a header starting {','.join(META_COLUMNS)} and at least one row")
    header, condition, seed, replicate = rows[0], *runs[run]
    rounds = []
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise CollectError(f"{path}: line {i} has {len(row)} fields, the header {len(header)}")
        try:
            cells = [row[0], row[1], int(row[2]), int(row[3])]
            rounds.append(int(row[4]))
        except ValueError:
            raise CollectError(f"{path}: line {i}: seed, replicate and round must be integers") from None
        if cells != [run, condition, seed, replicate]:
            raise CollectError(
                f"{path}: line {i} is run {row[0]}, condition {row[1]}, seed {row[2]}, replicate {row[3]}; "
                f"the sheet has {run}, {condition}, {seed}, {replicate}"
            )
        pinned = study.commit
        if pinned and "commit" in header:
            commit = row[header.index("commit")]
            if not str(commit).startswith(str(pinned)) or commit.endswith("+changes"):
                raise CollectError(f"{path}: line {i} comes from commit {commit}; the study pins {pinned}")
    expected = list(range(study.rounds + 1))
    if sorted(rounds) != expected:
        raise CollectError(f"{path}: rounds {sorted(rounds)}; a finished run has rounds {expected}")


def uncommitted(repo: Path, folder: Path, files: list[Path]) -> list[Path]:
    """The files (in `folder`) not in HEAD or different from it (untracked, staged or changed):
    one `git ls-files` and one `git status` of the folder."""
    tracked = set(git(repo, "ls-files", "--full-name", "--", str(folder)).splitlines())
    changed = {line[3:] for line in git(repo, "status", "--porcelain", "--", str(folder)).splitlines()}
    top = Path(git(repo, "rev-parse", "--show-toplevel")).resolve()
    rel = {f: str(f.resolve().relative_to(top)) for f in files}
    return [f for f in files if rel[f] not in tracked or rel[f] in changed]


def collect_once(clone: Path, study: Path, commit: bool, repo: Path) -> tuple[list[str], list[str], int]:
    """One pass: (runs brought in, runs committed, number of sheet runs still without measures here)."""
    loaded, runs = load(study)
    if not (clone / study / "study.yaml").exists():
        raise CollectError(f"{clone / study}/study.yaml does not exist: is {clone} the clone that runs the study?")
    if loaded.commit:
        try:
            head = git(clone, "rev-parse", "HEAD").strip()
        except (OSError, subprocess.CalledProcessError):
            raise CollectError(
                f"{clone} is not a git checkout whose HEAD can be read; the study pins a commit"
            ) from None
        if not head.startswith(loaded.commit):
            raise CollectError(f"{clone} is at {head[:12]}; the study pins {loaded.commit}")
    source, target = clone / study / "measures", study / "measures"
    target.mkdir(parents=True, exist_ok=True)
    brought = []
    for src in sorted(source.glob("*.csv")) if source.is_dir() else []:
        if src.name.startswith("."):
            continue  # a job's temporary file (conta_core.infra.fileio.atomic_path)
        dst = target / src.name
        if dst.exists():
            if not filecmp.cmp(src, dst, shallow=False):
                raise CollectError(f"{src} differs from {dst}, which is kept: compare them by hand")
            continue
        check_measures(src, loaded, runs)
        fd, tmp = tempfile.mkstemp(dir=target, prefix=f".{src.stem}.", suffix=".tmp")
        os.close(fd)
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
        brought.append(src.stem)
    committed = []
    if commit:
        mine = [target / f"{r}.csv" for r in runs if (target / f"{r}.csv").exists()]
        for f in uncommitted(repo, target, mine):
            rel = str(f.resolve().relative_to(repo.resolve()))
            git(repo, "add", "--", rel)
            git(repo, "commit", "-q", "-m", f"Study {loaded.name}: measures of {f.stem}", "--", rel)
            committed.append(f.stem)
    missing = sum(not (target / f"{r}.csv").exists() for r in runs)
    return brought, committed, missing


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("clone", type=Path, help="the checkout that runs the study")
    p.add_argument("study", type=Path, help="the study's folder, relative to both checkouts (studies/<name>)")
    p.add_argument("--commit", action="store_true", help="commit each measures file of the sheet not yet committed")
    p.add_argument("--watch", type=float, default=None, metavar="SECONDS", help="repeat until every run is here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.study.is_absolute():
        print("study_collect: give the study folder relative to the checkouts (studies/<name>)", file=sys.stderr)
        return 2
    if not (args.study / "study.yaml").exists():
        print(
            f"study_collect: {args.study}/study.yaml does not exist here (run from the checkout's top)", file=sys.stderr
        )
        return 2
    repo = Path.cwd()
    while True:
        try:
            brought, committed, missing = collect_once(args.clone, args.study, args.commit, repo)
        except subprocess.CalledProcessError as e:
            print(f"study_collect: {' '.join(e.cmd)}: {e.stderr.strip()}", file=sys.stderr, flush=True)
            if args.watch is None:
                return 1
            time.sleep(args.watch)
            continue
        except (CollectError, ConfigError, OSError, ValueError, KeyError) as e:
            print(f"study_collect: {e}", file=sys.stderr)
            return 1
        for run in brought:
            print(f"{args.study / 'measures' / run}.csv: brought in", flush=True)
        for run in committed:
            print(f"{args.study / 'measures' / run}.csv: committed", flush=True)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        print(f"{stamp}: {missing} run(s) of the sheet without measures here", flush=True)
        if args.watch is None or missing == 0:
            return 0
        time.sleep(args.watch)


if __name__ == "__main__":
    sys.exit(main())
