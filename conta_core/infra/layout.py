"""Every artifact path of a run, named in one place: the rules, `conta inspect`, the figures,
the summary and the tools read them from here.

    results/<run>/                     RunLayout(run_dir)
      data/manifest.json               .manifest
      pretrain/<backbone>.pth          .pretrain(backbone), .pretrain_log(backbone)
      round<t>/                        .round_dir(t)
        <stage folder>/<shard>/<id><suffix>   .shard_dir(t, stage, shard), .shard_dirs(t, stage, shards)
        <model>/model.pth, train_log.csv       .model(t, model), .train_log(t, model)
        seg_pred/<split>/<shard>/      .seg_pred_dir(t, split, shard)
        <eval>.csv                     .eval_csv(t, name), .seg_eval_csv(t, split)
        confounder.h5                  .confounder(t)
        context_diagnostics.json       .diagnostics(t)
        confounding_<stage>.json       .confounding(t, stage)
        summary.csv, figures/          .summary(t), .figures(t)
      summary.csv                      .summary()
    results_dir/pretrain_cache/        PRETRAIN_CACHE: generated pre-training shared by runs
      logs/<rule>/<name>.log           .log(rule, name)  (logs/<rule>.log without a name)
      benchmarks/<rule>/<name>.tsv     .benchmark(rule, name)

`t` and `shard` may be ints or Snakemake wildcard patterns ("{t}"), so the rules build their
output patterns from the same methods.

Shared prefix [OURS] (a study's runs, conta_core.infra.study): RunLayout(run_dir, shared=BASE)
puts what the conditions of a (dataset replicate, seed) share under the base run's folder
BASE: data/, pretrain/ and every artifact of round 0 (t == 0 or "0": models, per-image
folders, evaluation tables, confounding measures). A wildcard pattern ("{t}") stays under
run_dir, so a run's rules never produce the base's files; round 0's confounder set (it
depends on context.confounder_source), the summaries, figures, logs and benchmarks stay
under run_dir too. STAGES, MODELS and EVALS are the declarative tables
of what a round holds, per method (irn | amn).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from conta_core.infra.config import config_error
from conta_core.infra.methods import METHOD_NAMES, METHODS

CAM_SUFFIX = ".npz"  # CAM artifacts (conta_core.infra.fileio.save_cam)
CONFOUNDER_FILE = "confounder.h5"  # round<t>/: the confounder set of round t (conta_core.steps.confounder)
DIAGNOSTICS_FILE = "context_diagnostics.json"  # round<t>/: conta_core.evaluation.context_diagnostics
CONFOUNDING_STAGES = ("cam", "pseudo_mask", "seg_train", "seg_val")  # round<t>/confounding_<stage>.json
SUMMARY_FILE = "summary.csv"
MODEL_FILE = "model.pth"  # round<t>/<model folder>/: the trained weights
TRAIN_LOG_FILE = "train_log.csv"  # round<t>/<model folder>/: one row per training step


@dataclass(frozen=True)
class Stage:
    """A per-image artifact: round<t>/<folder>/<shard>/<id><suffix> for the ids of `split`."""

    name: str
    folder: str
    suffix: str
    split: str
    shared: bool = True  # made by every method; False: only by the methods that list it (infra.methods)


STAGES = {
    s.name: s
    for s in (
        Stage("cam", "cam", CAM_SUFFIX, "train"),
        Stage("ir_label", "ir_label", ".png", "train"),
        Stage("amn_cam", "amn_cam", CAM_SUFFIX, "train", False),
        Stage("amn_ir_label", "amn_ir_label", ".png", "train", False),
        Stage("pseudo_mask", "pseudo_mask", ".png", "train"),
        Stage("seg_pred_train", "seg_pred/train", ".png", "train"),
        Stage("seg_pred_val", "seg_pred/val", ".png", "val"),
    )
}


@dataclass(frozen=True)
class Model:
    """A trained network of a round: round<t>/<folder>/model.pth (+ train_log.csv)."""

    name: str
    folder: str


MODELS = {
    m.name: m
    for m in (Model("cls", "cls"), Model("amn", "amn"), Model("irn", "irn"), Model("aff", "aff"), Model("seg", "seg"))
}


@dataclass(frozen=True)
class Eval:
    """An evaluation table of a round: round<t>/<file>; `stage` is what it scores."""

    name: str
    file: str
    stage: str
    shared: bool = True  # False: only for the methods that list it (infra.methods)


EVALS = {
    e.name: e
    for e in (
        Eval("cam", "cam_eval.csv", "cam"),
        Eval("amn_cam", "amn_cam_eval.csv", "amn_cam", False),
        Eval("pseudo_mask", "pseudo_mask_eval.csv", "pseudo_mask"),
        Eval("seg_train", "seg_eval_train.csv", "seg_pred_train"),
        Eval("seg_val", "seg_eval_val.csv", "seg_pred_val"),
    )
}


def resume_dir(out_path: str | Path) -> Path:
    """The resume folder of a training output: <out>.resume/."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.name + RESUME_SUFFIX)


def resume_file(out_path: str | Path, step: int) -> Path:
    return resume_dir(out_path) / f"step_{step:08d}.pth"


def resume_steps(out_path: str | Path) -> list[tuple[int, Path]]:
    """(step, file) of the resume checkpoints of a training output, newest first."""
    folder = resume_dir(out_path)
    if not folder.is_dir():
        return []
    return sorted(((int(m.group(1)), f) for f in folder.iterdir() if (m := _RESUME_STEP.match(f.name))), reverse=True)


def for_method(table: dict, method: str) -> list:
    """The entries of STAGES / MODELS / EVALS that `method` produces (conta_core.infra.methods), in table order."""
    if method not in METHODS:
        raise config_error("method", f"{method!r} is not one of {METHOD_NAMES}")
    m = METHODS[method]
    if table is MODELS:
        return [v for v in table.values() if v.name in m.models]
    listed = m.stages if table is STAGES else m.evals
    return [v for v in table.values() if v.shared or v.name in listed]


TOP_FOLDERS = ("data", "pretrain", "logs", "benchmarks")
RESUME_SUFFIX = (
    ".resume"  # <out>.resume/step_<N>.pth: resume checkpoints of a training output (conta_core.infra.training)
)
_RESUME_STEP = re.compile(r"^step_(\d+)\.pth$")
PRETRAIN_CACHE = "pretrain_cache"  # <results_dir>/pretrain_cache/<backbone>-<key>/ (conta_core.steps.pretrain), shared by runs  # run-level folders besides round<t>/


class RunLayout:
    """Paths of the artifacts of one run folder (results_dir/run); see the module docstring."""

    def __init__(self, run_dir: str | Path, shared: str | Path | None = None) -> None:
        self.run_dir = str(run_dir)
        self.shared = str(shared) if shared else None

    def _base(self, t=None) -> str:
        """The folder that holds round t's artifacts (t None: data/ and pretrain/)."""
        if self.shared is not None and (t is None or str(t) == "0"):
            return self.shared
        return self.run_dir

    @staticmethod
    def run_of(path: str | Path) -> str:
        """The run folder that holds the artifact `path` (a job derives it from its own output)."""
        p = Path(path)
        for folder in (p, *p.parents):
            if (folder.name.startswith("round") and folder.name[5:].isdigit()) or folder.name in TOP_FOLDERS:
                return str(folder.parent)
        if p.name == SUMMARY_FILE:
            return str(p.parent)
        raise ValueError(f"{path}: not inside a run folder (round<t>/, {', '.join(TOP_FOLDERS)} or {SUMMARY_FILE})")

    @staticmethod
    def describe(path: str | Path) -> tuple[int, str]:
        """(round t, name) of a round's evaluation table (EVALS name, e.g. (0, "cam") for
        round0/cam_eval.csv) or training log (MODELS name, e.g. (1, "irn") for
        round1/irn/train_log.csv): how the figure scripts label the files they are given."""
        p = Path(path)
        for folder in p.parents:
            if folder.name.startswith("round") and folder.name[5:].isdigit():
                t, rel = int(folder.name[5:]), p.relative_to(folder).as_posix()
                for e in EVALS.values():
                    if rel == e.file:
                        return t, e.name
                for m in MODELS.values():
                    if rel == f"{m.folder}/{TRAIN_LOG_FILE}":
                        return t, m.name
                break
        raise ValueError(f"{path}: not an evaluation table or training log of a round (round<t>/...)")

    def _p(self, *parts) -> str:
        return "/".join([self.run_dir, *map(str, parts)])

    @property
    def manifest(self) -> str:
        return f"{self.data_dir}/manifest.json"

    @property
    def data_dir(self) -> str:
        return f"{self._base()}/data"

    def pretrain(self, backbone: str) -> str:
        return f"{self._base()}/pretrain/{backbone}.pth"

    def pretrain_log(self, backbone: str) -> str:
        return f"{self._base()}/pretrain/{backbone}_train_log.csv"

    def round_dir(self, t) -> str:
        """round<t>/ of the run, or of the shared base for round 0 (see the module docstring)."""
        return f"{self._base(t)}/round{t}"

    def own_round_dir(self, t) -> str:
        """round<t>/ under run_dir even for a shared round 0 (confounder set, summaries, figures)."""
        return self._p(f"round{t}")

    def shard_dir(self, t, stage: str, shard) -> str:
        return f"{self.round_dir(t)}/{STAGES[stage].folder}/{shard}"

    def shard_dirs(self, t, stage: str, shards) -> list[str]:
        return [self.shard_dir(t, stage, s) for s in shards]

    def seg_pred_dir(self, t, split, shard) -> str:
        """round<t>/seg_pred/<split>/<shard> (split may be the wildcard "{split}")."""
        return f"{self.round_dir(t)}/seg_pred/{split}/{shard}"

    def model(self, t, model: str) -> str:
        return f"{self.round_dir(t)}/{MODELS[model].folder}/{MODEL_FILE}"

    def train_log(self, t, model: str) -> str:
        return f"{self.round_dir(t)}/{MODELS[model].folder}/{TRAIN_LOG_FILE}"

    def eval_csv(self, t, name: str) -> str:
        return f"{self.round_dir(t)}/{EVALS[name].file}"

    def seg_eval_csv(self, t, split) -> str:
        """round<t>/seg_eval_<split>.csv (EVALS seg_train / seg_val; split may be "{split}")."""
        return f"{self.round_dir(t)}/seg_eval_{split}.csv"

    def confounder(self, t) -> str:
        return f"{self.own_round_dir(t)}/{CONFOUNDER_FILE}"

    def diagnostics(self, t) -> str:
        return f"{self.round_dir(t)}/{DIAGNOSTICS_FILE}"

    def confounding(self, t, stage) -> str:
        """round<t>/confounding_<stage>.json: conta_core.evaluation.confounding measures of a stage
        (CONFOUNDING_STAGES; stage may be the wildcard "{stage}")."""
        return f"{self.round_dir(t)}/confounding_{stage}.json"

    def summary(self, t=None) -> str:
        return self._p(SUMMARY_FILE) if t is None else f"{self.own_round_dir(t)}/{SUMMARY_FILE}"

    def figures(self, t) -> str:
        return f"{self.own_round_dir(t)}/figures"

    def figure(self, t, name: str) -> str:
        return f"{self.figures(t)}/{name}"

    def log(self, rule: str, name: str | None = None) -> str:
        """logs/<rule>/<name>.log, or logs/<rule>.log for a rule with one job."""
        return self._p("logs", f"{rule}.log") if name is None else self._p("logs", rule, f"{name}.log")

    def benchmark(self, rule: str, name: str | None = None) -> str:
        """benchmarks/<rule>/<name>.tsv, or benchmarks/<rule>.tsv for a rule with one job."""
        return self._p("benchmarks", f"{rule}.tsv") if name is None else self._p("benchmarks", rule, f"{name}.tsv")
