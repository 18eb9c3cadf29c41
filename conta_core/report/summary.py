"""The per-round summary table (CONTA paper Table 1 layout: CAM, pseudo-mask, seg mIoU).

Reads the evaluation CSVs of each round:
- `round<t>/cam_eval.csv`: threshold sweep (threshold, miou, per-class IoU,
  is_eval_threshold, is_best), written by conta_core.evaluation.cam_eval.eval_cam_to_csv;
- `round<t>/pseudo_mask_eval.csv`, `round<t>/seg_eval_{val,train}.csv`: per-class rows plus
  a final row class == "mean", written by conta_core.evaluation.evaluate.evaluate_to_csv;
- a method's own map sweeps (the layout's EVALS that are not shared, conta_core.infra.methods;
  method amn: `round<t>/amn_cam_eval.csv`, same layout as cam_eval.csv), reported in the
  extra columns METHOD_COLUMNS (<name>_miou, _best_miou, _best_threshold), which appear only
  when a round has that file;
- `round<t>/confounding_<stage>.json` (conta_core.evaluation.confounding): per stage the pair confusion
  `cf_<stage>_pair` (mean m(k->c) over the co-occurring pairs), `cf_<stage>_pair_undef` (how many
  directions k->c the mean leaves out because TP(c) = 0 < FP(k->c)) and the background leak
  `cf_<stage>_bg` (bg_leak_context), and the pseudo-masks' boundary F `cf_pseudo_mask_bf`;
  ratios, not percentages; columns appear when a round has the files (CONFOUNDING_COLUMNS);
- context rounds (conta / placebo, t > 0): `round<t>/context_diagnostics.json`
  (conta_core.evaluation.context_diagnostics), reported in CONTEXT_COLUMNS (alpha entropy, M across-image
  coefficient of variation, CAM change under another image's M, inert flag).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from conta_core.infra.fileio import read_json, write_csv
from conta_core.infra.layout import CONFOUNDER_FILE, CONFOUNDING_STAGES, DIAGNOSTICS_FILE, EVALS, RunLayout

SUMMARY_COLUMNS = [
    "round",
    "cam_miou",
    "cam_best_miou",
    "cam_best_threshold",
    "pseudo_mask_miou",
    "seg_train_miou",
    "seg_val_miou",
]
METHOD_EVALS = [e.name for e in EVALS.values() if not e.shared]  # a method's own map sweeps (amn_cam)
METHOD_COLUMNS = [f"{n}_{s}" for n in METHOD_EVALS for s in ("miou", "best_miou", "best_threshold")]


def _mean_row(path: Path) -> float:
    df = pd.read_csv(path)
    rows = df[df["class"] == "mean"]
    if rows.empty:
        raise ValueError(f"{path}: no 'mean' row")
    return float(rows["iou"].iloc[0])


def cam_scores(path: Path) -> tuple[float, float, float]:
    """(mIoU at the configured eval threshold, best mIoU, best threshold) from a CAM sweep CSV."""
    df = pd.read_csv(path)
    at_eval = df[df["is_eval_threshold"].astype(bool)]
    best = df[df["is_best"].astype(bool)]
    if at_eval.empty or best.empty:
        raise ValueError(f"{path}: sweep lacks the eval-threshold or best row")
    return float(at_eval["miou"].iloc[0]), float(best["miou"].iloc[0]), float(best["threshold"].iloc[0])


CONTEXT_COLUMNS = ["ctx_alpha_entropy_mean", "ctx_m_cv", "ctx_cam_change", "ctx_inert"]  # context_diagnostics.json
CONFOUNDING_KEYS = {  # column suffix -> JSON key
    "pair": "pair_confusion_mean",
    "pair_undef": "pair_confusion_undefined",  # directions with TP(c) = 0 < FP(k->c), left out of `pair`
    "bg": "bg_leak_context",
}
CONFOUNDING_COLUMNS = [f"cf_{s}_{k}" for s in CONFOUNDING_STAGES for k in CONFOUNDING_KEYS] + ["cf_pseudo_mask_bf"]


def confounding_values(round_dir: Path) -> dict:
    """The cf_* columns of a round from its confounding_<stage>.json files (absent: left out)."""
    row = {}
    for stage in CONFOUNDING_STAGES:
        path = round_dir / f"confounding_{stage}.json"
        if path.exists():
            d = read_json(path)
            row.update({f"cf_{stage}_{k}": d.get(key) for k, key in CONFOUNDING_KEYS.items()})
            if stage == "pseudo_mask":
                row["cf_pseudo_mask_bf"] = d["boundary_f"]
    return row


def round_row(round_dir: Path, t: int) -> dict:
    """One summary row from a round folder; missing evals become NaN."""
    row: dict = {"round": t}
    cam = round_dir / EVALS["cam"].file
    if cam.exists():
        row["cam_miou"], row["cam_best_miou"], row["cam_best_threshold"] = cam_scores(cam)
    for name in METHOD_EVALS:
        own = round_dir / EVALS[name].file
        if own.exists():
            row[f"{name}_miou"], row[f"{name}_best_miou"], row[f"{name}_best_threshold"] = cam_scores(own)
    for key, name in (
        ("pseudo_mask_miou", "pseudo_mask"),
        ("seg_train_miou", "seg_train"),
        ("seg_val_miou", "seg_val"),
    ):
        p = round_dir / EVALS[name].file
        if p.exists():
            row[key] = _mean_row(p)
    row.update(confounding_values(round_dir))
    diag = round_dir / DIAGNOSTICS_FILE
    if diag.exists():
        d = read_json(diag)
        for key in CONTEXT_COLUMNS:
            row[key] = d.get(key.removeprefix("ctx_"))
    return row


NO_GT_COLUMNS = ["round", "ground_truth", "pseudo_masks", "seg_predictions", "confounder"]


def product_row(round_dir: Path, t: int) -> dict:
    """One summary row of a dataset without GT masks: what the round produced (counts)."""
    return {
        "round": t,
        "ground_truth": "none: not evaluated",
        "pseudo_masks": len(list(round_dir.glob("pseudo_mask/*/*.png"))),
        "seg_predictions": len(list(round_dir.glob("seg_pred/*/*/*.png"))),
        "confounder": (round_dir / CONFOUNDER_FILE).exists(),
    }


def summarize(
    run_dir: Path, rounds: list[int], ground_truth: bool = True, shared_dir: Path | None = None
) -> pd.DataFrame:
    """Summary table for `rounds` of `run_dir` (mIoU as percentages, 2 decimals).

    shared_dir: the base run folder that holds round 0 (a study run, conta_core.infra.layout).

    ground_truth False (a dataset without GT masks): NO_GT_COLUMNS, what each round made,
    plus the context diagnostics columns of context rounds.
    """
    layout = RunLayout(run_dir, shared=shared_dir)

    def rd(t: int) -> Path:
        return Path(layout.round_dir(t))

    if not ground_truth:
        rows = [{**product_row(rd(t), t), **round_row(rd(t), t)} for t in rounds]
        columns = NO_GT_COLUMNS + (CONTEXT_COLUMNS if any("ctx_inert" in r for r in rows) else [])
        return pd.DataFrame(rows).reindex(columns=columns)
    rows = [round_row(rd(t), t) for t in rounds]
    columns = SUMMARY_COLUMNS + [c for c in METHOD_COLUMNS if any(c in r for r in rows)]
    columns += [c for c in CONFOUNDING_COLUMNS if any(c in r for r in rows)]
    columns += CONTEXT_COLUMNS if any("ctx_inert" in r for r in rows) else []
    df = pd.DataFrame(rows).reindex(columns=columns)
    for c in columns:
        if c.endswith("miou"):
            df[c] = (df[c] * 100).round(2)
        elif c.startswith("cf_"):
            df[c] = df[c].astype(float).round(4)
    return df


PAIRED_METRICS = ["cam_miou", "cam_best_miou", "pseudo_mask_miou", "seg_train_miou", "seg_val_miou"]


def pseudo_class_iou(round_dir: Path) -> dict[str, float]:
    """class name -> pseudo-mask IoU (0..1) from round_dir/pseudo_mask_eval.csv ({} if absent)."""
    path = round_dir / EVALS["pseudo_mask"].file
    if not path.exists():
        return {}
    df = pd.read_csv(path)
    return {str(c): float(v) for c, v in zip(df["class"], df["iou"]) if c != "mean"}


def paired_comparison(
    pairs: dict[str, tuple[Path, Path]],
    t: int,
    classes: list[str],
    labels: tuple[str, str] = ("a", "b"),
    t_b: int | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Compare round t of two settings run in pairs (e.g. CONTA vs context none, one pair per seed).

    pairs: key (e.g. the seed) -> (run dir of setting a, run dir of setting b);
    classes: class names whose pseudo-mask IoU gets a column `pseudo_<name>`;
    t_b: the round read for setting b (default t), e.g. round 1 vs round 0 of one run.
    Returns (runs: one row per key and setting, metrics in %; summary: one row per metric with
    the mean and sample std of each setting and the mean / min / max of the paired difference
    a - b over the keys where both have the metric).
    """
    rows = []
    for key, dirs in pairs.items():
        for label, run_dir, r in zip(labels, dirs, (t, t if t_b is None else t_b)):
            round_dir = Path(run_dir) / f"round{r}"
            if not round_dir.is_dir():
                raise FileNotFoundError(f"{round_dir}: no round {r} folder for {label} of pair {key!r}")
            row = {"key": key, "setting": label, **round_row(round_dir, r)}
            per_class = pseudo_class_iou(round_dir)
            missing = [c for c in classes if per_class and c not in per_class]
            if missing:
                raise ValueError(f"{round_dir}/pseudo_mask_eval.csv: no class {missing[0]!r}")
            row.update({f"pseudo_{c}": per_class[c] for c in classes if c in per_class})
            rows.append(row)
    metrics = PAIRED_METRICS + [f"pseudo_{c}" for c in classes]
    runs = pd.DataFrame(rows).reindex(columns=["key", "setting", "round"] + metrics)
    runs[metrics] = runs[metrics] * 100
    out = []
    for m in metrics:
        wide = runs.pivot(index="key", columns="setting", values=m).reindex(columns=list(labels))
        both = wide.dropna()
        if both.empty:
            continue
        diff = both[labels[0]] - both[labels[1]]
        out.append({"metric": m, "n": len(both),
                    f"{labels[0]}_mean": both[labels[0]].mean(), f"{labels[0]}_std": both[labels[0]].std(ddof=1),
                    f"{labels[1]}_mean": both[labels[1]].mean(), f"{labels[1]}_std": both[labels[1]].std(ddof=1),
                    "diff_mean": diff.mean(), "diff_min": diff.min(), "diff_max": diff.max()})  # fmt: skip
    return runs.round(2), pd.DataFrame(out).round(2)


def write_summary(
    run_dir: Path, rounds: list[int], out_csv: Path, ground_truth: bool = True, shared_dir: Path | None = None
) -> pd.DataFrame:
    df = summarize(run_dir, rounds, ground_truth, shared_dir)
    write_csv(out_csv, df)
    return df
