"""A study: many runs of the workflow from a sheet, in one Snakemake DAG (rules/study.smk).

    studies/<name>/study.yaml     the study (schema config/study_schema.yaml):
        name: example
        base: ../../.test/config.yaml     # overlay on config/config.yaml for every run (or a mapping,
                                          # a list of files / mappings merged in order, or null)
        sheet: runs.tsv
        rounds: 1
        pairs: [[conta, placebo]]         # (treatment, reference) conditions
        order: [conta, placebo]           # optional: these conditions' runs first (job priorities)
        measures:
          - {column: pseudo_mask_miou, role: primary, rounds: [1]}
          - {column: cf_pseudo_pair, role: secondary, relative: true}
        power: {alpha: 0.05, power: 0.8, miou_effect: 2.0, relative_effect: 0.2}
    studies/<name>/runs.tsv       the sheet, one row per run (tab-separated, header first):
        run  condition  seed  replicate  overlay
        conta_r0_s0  conta  0  0  {context: {mode: conta}}
        placebo_r0_s0  placebo  0  0  {context: {mode: placebo}}
    studies/<name>/measures/<run>.csv    one row per round of a finished run (rule study_measures)
    studies/<name>/analysis/             the paired analysis (rule study_analysis)

Paths in study.yaml (base, sheet, an overlay file) are relative to the study's folder.
A run's config: config/config.yaml (with any --configfile) <- `base` <- the row's overlay <-
{run, results_dir: <results_dir>/<study name>, seed, rounds, dataset.synthetic.seed: replicate}.
`replicate` is the generator seed of the dataset (an independent replicate of the data).

Shared prefix [OURS]: the runs of one (replicate, seed) share data, pre-training and round 0
(common random numbers): a base run `base_r<replicate>_s<seed>` with `rounds: 0` builds them,
and each run of the group reads them through `shared_prefix` (conta_core.infra.layout). So the
runs of a group may differ only in `context` (round 0 never reads it, the confounder set of
round 0 stays in each run's own folder): an overlay that changes any other key is an error.

Finished runs [OURS]: a run whose measures file exists is not instantiated (none of its jobs is
in the DAG), nor a base whose runs are all finished; the measures files are small and meant to
be committed, so a study continues on a fresh machine where it stopped. Each row ends with its
provenance: `commit` (the workflow's HEAD where the DAG was planned, "+changes" with tracked
changes) and `machine` (the library versions, CPU and instruction-set fingerprint of the
machine that ran Snakemake's main process, where the local rule study_measures runs: with
--cores the machine of every job; on a cluster the submit host, not the nodes).

Order [OURS]: `order` lists conditions whose runs go first. rules/study.smk gives every job of
a run the Snakemake priority `Study.priority(run)`: unit by unit in sheet order, within a unit
its base and then the listed conditions in `order`, and then the runs of the unlisted
conditions, again unit by unit in sheet order (a base goes with its unit's first pending run).
When several jobs are ready the higher priority runs first, so with `--cores 2` the study
completes unit after unit of the listed conditions (a study cut short by its budget has whole
units, each with its measures files committed) before any unlisted run starts; on a cluster
they are submitted first. Without `order`, every condition is unlisted: unit by unit, in
sheet order. Runs therefore finish one after another, not all at the end: the rounds of a
`none` run do not depend on each other, and with one priority for all of them Snakemake ran
the classifiers of every round of every `none` run before any run's later steps.
An entry of `order` may itself be a list, a tier: `order: [[conta, placebo], [conta_b2,
placebo_b2]]` runs every unit of the first tier's conditions, unit by unit, before the second
tier's first run; a flat list is one tier.

Commit [OURS]: `commit` pins the commit a study's runs come from (a study that spans sessions
continues from a clone of it while main moves on); `Study.check_commit(repo)` (rules/study.smk,
in Snakemake's main process only: a job on a node may lack git) stops the workflow while runs
are left unless the workflow folder is the top of a git checkout at that commit without
changes to tracked files, and names the steps to continue. With every run measured only the
analysis is left, which runs at any commit. A study file cannot name the commit that holds it,
so the key is added on a later commit (study 2: on main, for its clone of 98b1389, whose own
study.yaml has no `commit` and so no check): it refuses the wrong commit; it does not prove
that a clone which predates the key is at the right one.

Every check runs at parse time, before any job, and a failure names the study and the row:
"study <name> row <i> (run <run>): <problem>", rows counted from 1 after the header.
"""

from __future__ import annotations

import csv
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from conta_core.infra.config import REPO_ROOT, ConfigError, check_config, deep_merge, load_yaml, validate_schema

if TYPE_CHECKING:
    import pandas as pd

STUDY_SCHEMA_PATH = REPO_ROOT / "config" / "study_schema.yaml"
SHEET_COLUMNS = ("run", "condition", "seed", "replicate", "overlay")
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")  # run and condition names: Snakemake rule-name prefixes
SET_BY_STUDY = ("run", "results_dir", "seed", "rounds", "study", "shared_prefix")  # overlay must not set these
SHARED_FREE = ("run", "rounds", "context", "shared_prefix")  # keys the runs of a group may differ in
MEASURES_DIR = "measures"
ANALYSIS_DIR = "analysis"
META_COLUMNS = ["run", "condition", "seed", "replicate", "round"]  # first columns of a measures file
# last columns: the workflow's commit and the machine that wrote the file (workflow_commit,
# conta_core.report.run_digest.machine_label); files written before they existed lack them
PROVENANCE_COLUMNS = ["commit", "machine"]


class StudyError(ConfigError):
    """A study file or sheet is wrong; the message names the study and the row."""


@dataclass
class StudyRun:
    """One row of the sheet with its merged run config."""

    row: int
    name: str
    condition: str
    seed: int
    replicate: int
    overlay: dict
    config: dict = field(default_factory=dict)

    @property
    def group(self) -> tuple[int, int]:
        return (self.replicate, self.seed)

    @property
    def base(self) -> str:
        return base_name(self.replicate, self.seed)


@dataclass
class Study:
    """A loaded, validated study (see the module docstring)."""

    name: str
    folder: Path
    rounds: int
    pairs: list[tuple[str, str]]
    measures: list[dict]
    power: dict
    runs: list[StudyRun]
    bases: dict[str, dict]  # base run name -> its config (rounds 0)
    results_dir: str
    order: list[list[str]] = field(default_factory=list)  # tiers of conditions
    primary_pairs: list[tuple[str, str]] | None = None  # pairs whose primary measures are primary (None: all)
    decision: str = "improvement"  # the verdict's rule (conta_core.evaluation.study_analysis)
    commit: str | None = None  # the commit the runs come from (check_commit)

    def priority(self, run: str) -> int:
        """Snakemake priority (>= 1) of every job of `run` (a sheet run or a base run): tier by
        tier (the tiers of `order`, then one tier of the unlisted conditions in sheet order), in
        a tier the units (replicate, seed) in sheet order, and within a unit the tier's
        conditions in order, each run one step below the previous; a base run as the highest of
        its unit's pending runs (a unit whose listed runs are finished rebuilds its base when
        its unlisted runs come, not before). So unit 1's runs of a tier finish before unit 2's
        start, and every listed run before any unlisted one (see the module docstring)."""
        units = list(dict.fromkeys(r.group for r in self.runs))
        n_units = len(units)
        listed = {c for t in self.order for c in t}
        unlisted = [c for c in dict.fromkeys(r.condition for r in self.runs) if c not in listed]
        tiers = self.order + ([unlisted] if unlisted else [])
        # tier i takes the band of priorities above every later tier: offset + (units left) * k - j
        offsets = [n_units * sum(len(t) for t in tiers[i + 1 :]) for i in range(len(tiers))]
        if run in self.bases:  # as its first pending run (its runs need it first anyway)
            mine = [r for r in self.runs if r.base == run]
            return max(self.priority(r.name) for r in ([r for r in mine if not self.finished(r)] or mine))
        r = next(r for r in self.runs if r.name == run)
        tier, j = next((i, t.index(r.condition)) for i, t in enumerate(tiers) if r.condition in t)
        return offsets[tier] + (n_units - units.index(r.group)) * len(tiers[tier]) - j

    def measures_file(self, run: str) -> str:
        return str(self.folder / MEASURES_DIR / f"{run}.csv")

    def analysis_file(self, name: str) -> str:
        return str(self.folder / ANALYSIS_DIR / name)

    def finished(self, run: StudyRun) -> bool:
        return Path(self.measures_file(run.name)).exists()

    def finished_measures(self) -> list[str]:
        """The measures files of the finished runs (rule study_interim_analysis); StudyError if
        none has finished."""
        files = [self.measures_file(r.name) for r in self.runs if self.finished(r)]
        if not files:
            raise StudyError(
                f"study {self.name}: no run has finished yet (no {self.measures_file('<run>')}); "
                "run the target `study` first"
            )
        return files

    def pending_runs(self) -> list[StudyRun]:
        return [r for r in self.runs if not self.finished(r)]

    def pending_bases(self) -> dict[str, dict]:
        needed = {r.base for r in self.pending_runs()}
        return {b: cfg for b, cfg in self.bases.items() if b in needed}

    def run_dir(self, run: str) -> str:
        return f"{self.results_dir}/{run}"

    def check_commit(self, repo: str | Path) -> None:
        """StudyError unless `commit` is unset, no run is left, or `repo` is the top of a git
        checkout whose HEAD is `commit` (a prefix of it) without changes to tracked files: a
        study's runs come from one commit (see the module docstring)."""
        pending = self.pending_runs()
        if not self.commit or not pending:
            return
        where = f"its runs come from commit {self.commit} (study.yaml `commit`) and {len(pending)} are left"

        def git(*args: str) -> str:
            try:
                return git_output(repo, *args)
            except FileNotFoundError:
                raise _study_error(
                    self.name, f"{where}, but git is not installed to read the checkout's HEAD"
                ) from None
            except subprocess.CalledProcessError as e:
                raise _study_error(
                    self.name,
                    f"{where}, but {repo!s} is not a git checkout whose HEAD can be read ({e.stderr.strip()})",
                ) from None

        top = git("rev-parse", "--show-toplevel")
        if Path(top).resolve() != Path(repo).resolve():
            raise _study_error(
                self.name, f"{where}, but the workflow {repo!s} lies inside another git checkout ({top})"
            )
        head = git("rev-parse", "HEAD")
        study_file = self.folder.resolve()
        try:
            study_rel = study_file.relative_to(Path(repo).resolve())
        except ValueError:
            study_rel = study_file
        if not head.startswith(self.commit):
            names = ", ".join(r.name for r in pending[:3]) + (", ..." if len(pending) > 3 else "")
            raise _study_error(
                self.name,
                f"{where} ({names}), but this checkout is at {head[:12]}. Continue in a clone at that commit: "
                f"git clone '{repo!s}' <dir> && git -C <dir> checkout {self.commit}; copy {study_rel}/"
                f"{MEASURES_DIR}/*.csv into <dir>/{study_rel}/{MEASURES_DIR}/; in <dir> run snakemake study "
                f"--cores N --config study={study_rel}/study.yaml; bring each new measures file back here "
                f"and commit it (python tools/study_collect.py <dir> {study_rel} --commit [--watch 60]). "
                "The analysis runs here once every run has its measures file (docs/context.md, "
                "'Running a study')",
            )
        changed = git("status", "--porcelain", "--untracked-files=no")
        if changed:
            files = ", ".join(line[3:] for line in changed.splitlines()[:5])
            raise _study_error(
                self.name,
                f"{where}, and this checkout is at it but has changes to tracked files ({files}): "
                "commit or stash them so that the runs come from the commit itself",
            )


def base_name(replicate: int, seed: int) -> str:
    return f"base_r{replicate}_s{seed}"


def _study_error(study: str, problem: str, row: int | None = None, run: str | None = None) -> StudyError:
    where = f"study {study}" + (f" row {row}" if row is not None else "") + (f" (run {run})" if run else "")
    return StudyError(f"{where}: {problem}")


def _overlay_file(folder: Path, value: str, what: str) -> dict:
    path = Path(value) if Path(value).is_absolute() else folder / value
    if not path.exists():
        raise ConfigError(f"{what}: {path} does not exist")
    return load_yaml(path)


def parse_overlay(text: str, folder: Path) -> dict:
    """An overlay cell: '' (none), a YAML flow mapping ('{context: {mode: placebo}}') or a path
    to a YAML file relative to the study folder; ConfigError on anything else."""
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"overlay {text!r} is not a YAML mapping ({e})") from e
        if not isinstance(value, dict):
            raise ConfigError(f"overlay {text!r} is not a YAML mapping")
        return value
    return _overlay_file(folder, text, "overlay")


def _int_cell(value: str, column: str) -> int:
    try:
        out = int(value.strip())
    except ValueError:
        raise ConfigError(f"{column} {value!r} is not an integer") from None
    if out < 0:
        raise ConfigError(f"{column} {out} is negative")
    return out


def _validate_study_file(data: dict, path: Path) -> None:
    import jsonschema

    schema = load_yaml(STUDY_SCHEMA_PATH)
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{'.'.join(map(str, e.absolute_path)) or '<top level>'}: {e.message}" for e in errors[:10]]
        raise StudyError(f"study file {path}:\n  " + "\n  ".join(lines))


def _run_config(
    default: dict, base: dict, overlay: dict, results_dir: str, run: str, seed: int, replicate: int, rounds: int
) -> dict:
    cfg = deep_merge(deep_merge(default, base), overlay)
    cfg = deep_merge(cfg, {"run": run, "results_dir": results_dir, "seed": seed, "rounds": rounds, "study": None})
    if cfg.get("dataset", {}).get("kind") == "synthetic":
        cfg = deep_merge(cfg, {"dataset": {"synthetic": {"seed": replicate}}})
    return cfg


def _differing_key(a: dict, b: dict, prefix: str = "") -> str | None:
    """The first key path where a and b differ (None when equal)."""
    for k in sorted(set(a) | set(b), key=str):
        if prefix == "" and k in SHARED_FREE:
            continue
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            sub = _differing_key(va, vb, f"{prefix}{k}.")
            if sub:
                return sub
        elif va != vb:
            return f"{prefix}{k}"
    return None


def load_study(path: str | Path, default_config: dict) -> Study:
    """Load and check a study file and its sheet against `default_config` (the workflow's
    config: config/config.yaml plus any --configfile); StudyError naming the row."""
    path = Path(path)
    data = load_yaml(path)
    _validate_study_file(data, path)
    name, folder = data["name"], path.parent
    base: dict = {}
    items = data.get("base") or []
    for item in items if isinstance(items, list) else [items]:  # later overlays win
        base = deep_merge(base, _overlay_file(folder, item, f"study {name}: base") if isinstance(item, str) else item)
    default = {k: v for k, v in default_config.items() if k not in ("study", "shared_prefix")}
    results_dir = f"{deep_merge(default, base)['results_dir']}/{name}"
    rounds = int(data["rounds"])
    sheet_path = folder / data.get("sheet", "runs.tsv")
    if not sheet_path.exists():
        raise _study_error(name, f"sheet {sheet_path} does not exist")
    with open(sheet_path, newline="") as f:
        reader = csv.DictReader((line for line in f if line.strip() and not line.startswith("#")), delimiter="\t")
        missing = [c for c in SHEET_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise _study_error(
                name,
                f"sheet {sheet_path} lacks the column(s) {', '.join(missing)} (columns: {', '.join(SHEET_COLUMNS)})",
            )
        rows = list(reader)
    if not rows:
        raise _study_error(name, f"sheet {sheet_path} has no runs")

    runs: list[StudyRun] = []
    seen: dict[str, int] = {}
    cells: dict[tuple[str, int, int], int] = {}
    for i, row in enumerate(rows, start=1):
        run = (row.get("run") or "").strip()
        try:
            if not NAME.match(run):
                raise ConfigError(f"run name {run!r} must match {NAME.pattern} (it prefixes the run's rule names)")
            if run in seen:
                raise ConfigError(f"duplicate run name (first in row {seen[run]})")
            if run.startswith("base_"):
                raise ConfigError("run names starting with base_ are the study's base runs")
            seen[run] = i
            condition = (row.get("condition") or "").strip()
            if not NAME.match(condition):
                raise ConfigError(f"condition {condition!r} must match {NAME.pattern}")
            seed, replicate = (
                _int_cell(row.get("seed") or "", "seed"),
                _int_cell(row.get("replicate") or "", "replicate"),
            )
            key = (condition, replicate, seed)
            if key in cells:
                raise ConfigError(
                    f"condition {condition}, replicate {replicate}, seed {seed} already in row {cells[key]}"
                )
            cells[key] = i
            overlay = parse_overlay(row.get("overlay") or "", folder)
            fixed = [k for k in SET_BY_STUDY if k in overlay]
            if fixed:
                raise ConfigError(
                    f"overlay sets {', '.join(fixed)}, which the study sets (sheet columns, rounds, results_dir)"
                )
            cfg = _run_config(default, base, overlay, results_dir, run, seed, replicate, rounds)
            if cfg["dataset"]["kind"] != "synthetic" and replicate != 0:
                raise ConfigError("replicate other than 0 needs dataset.kind synthetic (it is the generator seed)")
            validate_schema(cfg)
            check_config(cfg)
        except ConfigError as e:
            raise _study_error(name, str(e).replace("\n", "\n  "), i, run or None) from None
        runs.append(StudyRun(i, run, condition, seed, replicate, overlay, cfg))

    conditions = {r.condition for r in runs}
    pairs = [tuple(p) for p in data["pairs"]]
    for a, b in pairs:
        for c in (a, b):
            if c not in conditions:
                raise _study_error(name, f"pairs: condition {c} has no run in the sheet")
    for r in runs:
        for a, b in pairs:
            partner = b if r.condition == a else a if r.condition == b else None
            if partner is not None and (partner, r.replicate, r.seed) not in cells:
                raise _study_error(
                    name,
                    f"condition {r.condition} has no partner {partner} for replicate {r.replicate}, seed {r.seed} (pairs: [{a}, {b}])",
                    r.row,
                    r.name,
                )

    bases: dict[str, dict] = {}
    for r in runs:
        bname = r.base
        if bname not in bases:
            bcfg = _run_config(default, base, {}, results_dir, bname, r.seed, r.replicate, 0)
            bases[bname] = bcfg
        key = _differing_key(r.config, bases[bname])
        if key is not None:
            raise _study_error(
                name,
                f"overlay changes {key}, which round 0 uses; the runs of a (replicate, seed) share round 0, so an overlay may change only {', '.join(k for k in SHARED_FREE if k not in ('run', 'rounds', 'shared_prefix'))}",
                r.row,
                r.name,
            )
        r.config = deep_merge(r.config, {"shared_prefix": f"{results_dir}/{bname}"})
    raw = list(data.get("order") or [])  # conditions (one tier) or tiers (lists; the schema: none empty)
    tiered = {isinstance(x, list) for x in raw}
    if len(tiered) > 1:
        raise _study_error(name, f"order: {raw} mixes conditions and tiers (lists); use only one of them")
    order = [list(x) for x in raw] if tiered == {True} else [raw] if raw else []
    flat = [c for tier in order for c in tier]
    for c in flat:
        if c not in conditions:
            raise _study_error(name, f"order: condition {c} has no run in the sheet")
    if len(set(flat)) != len(flat):
        raise _study_error(name, f"order: {raw} names a condition twice")
    measures = [dict(m) for m in data["measures"]]
    power = {"alpha": 0.05, "power": 0.8, "miou_effect": 2.0, "relative_effect": 0.2, **(data.get("power") or {})}
    primary_pairs = data.get("primary_pairs")
    if primary_pairs is not None:
        primary_pairs = [tuple(p) for p in primary_pairs]
        stray = [list(p) for p in primary_pairs if p not in pairs]
        if stray:
            raise _study_error(name, f"primary_pairs: {stray} not in pairs {[list(p) for p in pairs]}")
    return Study(
        name,
        folder,
        rounds,
        pairs,
        measures,
        power,
        runs,
        bases,
        results_dir,
        order,
        primary_pairs=primary_pairs,
        decision=data.get("decision", "improvement"),
        commit=data.get("commit"),
    )


def git_output(repo: str | Path, *args: str) -> str:
    """The stdout of `git -C repo args`, without its trailing newlines; FileNotFoundError
    without git, subprocess.CalledProcessError (with stderr) when git fails."""
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True)
    return done.stdout.rstrip("\n")


def workflow_commit(repo: str | Path) -> str:
    """The commit of the workflow at `repo` for a measures file's `commit` column: HEAD's first
    12 hex digits, "+changes" where tracked files differ from it, "unknown" without git or a
    checkout (never raises)."""
    try:
        head = git_output(repo, "rev-parse", "HEAD")[:12]
        return head + ("+changes" if git_output(repo, "status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def read_measures(paths: list[str | Path]) -> pd.DataFrame:
    """The measures files as one table, the provenance columns read as text (a commit such as
    012345678901 or 1234e5678901 would otherwise become a number)."""
    import pandas as pd

    return pd.concat([pd.read_csv(p, dtype={c: str for c in PROVENANCE_COLUMNS}) for p in paths], ignore_index=True)


def measures_table(
    summary: pd.DataFrame, run: str, condition: str, seed: int, replicate: int, provenance: dict | None = None
) -> pd.DataFrame:
    """A run's measures file: its summary rows (one per round) after META_COLUMNS, then the
    PROVENANCE_COLUMNS given in `provenance` (the same on every row)."""
    df = summary.copy()
    for col, value in (("run", run), ("condition", condition), ("seed", seed), ("replicate", replicate)):
        df[col] = value
    extra = [c for c in PROVENANCE_COLUMNS if provenance and c in provenance]
    for c in extra:
        df[c] = provenance[c]
    body = [c for c in df.columns if c not in META_COLUMNS and c not in extra]
    return df[META_COLUMNS + body + extra]
