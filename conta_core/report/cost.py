"""What a run cost, step by step: `conta cost results/<run> [--round T]`.

Reads the Snakemake benchmark files of a run, `benchmarks/<rule>/<name>.tsv` and
`benchmarks/<rule>.tsv` (conta_core.infra.layout.RunLayout.benchmark; one row per job:
columns s = wall seconds, max_rss = peak resident MiB, cpu_time = CPU seconds, ...), and
sums them per rule. A job's round is the `round<t>` its file name starts with (jobs without
one, prepare_data and pretrain, have none). A run of a study reads its data, pre-training
and round 0 from its base run (`base_r<replicate>_s<seed>`, conta_core.infra.study), whose
folder holds those jobs' files; `format_cost` says so when the run has no prepare_data job.
Wall seconds count whatever happened meanwhile:
a job paused or slowed by a neighbour shows it. The table is job-seconds, not the run's
wall time: jobs of one round run side by side where the cores allow.

Columns of `cost_table`: rule, jobs, seconds, share (of the table's seconds), cpu_seconds,
peak_rss_mib (the largest max_rss of the rule's jobs).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

_ROUND = re.compile(r"^round(\d+)")
COLUMNS = ["rule", "jobs", "seconds", "share", "cpu_seconds", "peak_rss_mib"]


def read_benchmarks(run_dir: str | Path) -> pd.DataFrame:
    """One row per benchmark file (one job) of run_dir: rule, name, round (NaN when none),
    seconds, cpu_seconds (the means over the file's rows: Snakemake's `repeat` writes one row
    per repetition, a plain job one), max_rss_mib (their largest)."""
    rows = []
    root = Path(run_dir) / "benchmarks"
    for path in sorted(root.rglob("*.tsv")):
        rel = path.relative_to(root)
        rule, name = (rel.parts[0], path.stem) if len(rel.parts) > 1 else (path.stem, "")
        try:
            t = pd.read_csv(path, sep="\t")
            seconds = float(pd.to_numeric(t["s"]).mean())
            if t.empty:
                raise ValueError("no rows")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, KeyError, ValueError) as e:
            raise ValueError(f"{path}: not a Snakemake benchmark file ({e})") from e
        m = _ROUND.match(name)
        rows.append(
            {
                "rule": rule,
                "name": name,
                "round": int(m.group(1)) if m else None,
                "seconds": seconds,
                "cpu_seconds": _column(t, "cpu_time").mean(),
                "max_rss_mib": _column(t, "max_rss").max(),
            }
        )
    return pd.DataFrame(rows, columns=["rule", "name", "round", "seconds", "cpu_seconds", "max_rss_mib"])


def _column(t: pd.DataFrame, name: str) -> pd.Series:
    """A numeric column of a benchmark table (NaN where absent or "-")."""
    return pd.to_numeric(t[name], errors="coerce") if name in t else pd.Series([float("nan")])


def cost_table(jobs: pd.DataFrame, round_: int | None = None) -> pd.DataFrame:
    """Per rule (the costliest first): jobs, seconds, share, cpu_seconds, peak_rss_mib, over
    the jobs of round `round_` (None: every job)."""
    if round_ is not None:
        jobs = jobs[jobs["round"] == round_]
    if jobs.empty:
        return pd.DataFrame(columns=COLUMNS)
    t = jobs.groupby("rule").agg(
        jobs=("name", "size"),
        seconds=("seconds", "sum"),
        cpu_seconds=("cpu_seconds", "sum"),
        peak_rss_mib=("max_rss_mib", "max"),
    )
    t["share"] = t["seconds"] / t["seconds"].sum()
    return t.reset_index().sort_values(["seconds", "rule"], ascending=[False, True])[COLUMNS]


def shared_note(run_dir: str | Path) -> list[str]:
    """A line when run_dir has no prepare_data benchmark (a study run: its data, pre-training
    and round 0 are its base run's jobs), else none."""
    if (Path(run_dir) / "benchmarks" / "prepare_data.tsv").exists():
        return []
    return [
        "(no prepare_data job here: in a study, the data, pre-training and round 0 are the base run's, base_r<replicate>_s<seed>)"
    ]


def format_cost(run_dir: str | Path, table: pd.DataFrame, round_: int | None) -> str:
    """The table as markdown, with its total."""
    where = f"round {round_}" if round_ is not None else "all jobs"
    if table.empty:
        return "\n".join([f"{run_dir}: no benchmark files for {where}", *shared_note(run_dir)])
    lines = [
        f"{run_dir}, {where}: {int(table['jobs'].sum())} jobs, {table['seconds'].sum():.1f} job-seconds",
        *shared_note(run_dir),
        "| rule | jobs | seconds | share | CPU seconds | peak RSS MiB |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in table.itertuples():
        lines.append(
            f"| {r.rule} | {r.jobs} | {r.seconds:.1f} | {100 * r.share:.1f} % | {r.cpu_seconds:.1f} | {r.peak_rss_mib:.0f} |"
        )
    return "\n".join(lines)
