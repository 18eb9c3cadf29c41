"""Report figures and tables of a run, from its evaluation CSVs, logs and confounder file.

Every plot function writes one PNG atomically (conta_core.infra.fileio.atomic_path) and returns its
path. Drawing uses matplotlib's object API (matplotlib.figure.Figure, Agg canvas): no
pyplot state, no global backend switch. Input formats:
- summary.csv (conta_core.report.summary): round, cam_miou, cam_best_miou, cam_best_threshold,
  pseudo_mask_miou, seg_train_miou, seg_val_miou (mIoU in %);
- cam_eval.csv (conta_core.evaluation.cam_eval): threshold, miou, one IoU column per class name,
  is_eval_threshold, is_best (IoU as fractions);
- pseudo_mask_eval.csv / seg_eval_{train,val}.csv (conta_core.evaluation.evaluate): stage, class,
  iou, precision, recall, gt_pixels, pred_pixels; last row class == "mean";
- train_log.csv: loss plus a step column (iteration, iter or the row number);
- confounder.h5 (conta_core.steps.confounder): dataset "C" float32[n, h, w], attrs classes,
  round, source, image_counts.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from conta_core.infra.fileio import atomic_path, write_csv
from conta_core.steps.confounder import load_confounder

DEFAULT_DPI = 100  # report.dpi
FIG_INCHES = (6.4, 4.0)  # line plots
PANEL_INCHES = 1.6  # one confounder map / one loss panel side
PERCENT = 100.0
MEAN_ROW = "mean"
CAM_FLAG_COLUMNS = ("threshold", "miou", "is_eval_threshold", "is_best")
STEP_COLUMNS = ("iteration", "iter")  # first present is the x axis of a loss curve
SMOOTH_POINTS = 50  # loss curves: moving mean over ~len/SMOOTH_POINTS iterations
CONFOUNDER_COLORMAP = "viridis"
MIOU_SERIES = {  # summary column -> legend label
    "cam_miou": "CAM (eval threshold)",
    "cam_best_miou": "CAM (best threshold)",
    "pseudo_mask_miou": "pseudo-mask",
    "seg_train_miou": "segmentation (train)",
    "seg_val_miou": "segmentation (val)",
}


# ----------------------------------------------------------------------------- reading


def read_table(path: Path, columns: tuple[str, ...] | list[str]) -> pd.DataFrame:
    """pandas CSV with the given columns present; ValueError naming the file / column otherwise."""
    path = Path(path)
    try:
        df = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise ValueError(f"{path}: cannot read table ({e})") from e
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column {missing[0]!r} (has {list(df.columns)})")
    return df


def cam_class_ious(path: Path) -> pd.Series:
    """Per-class IoU (fractions, index = class name) and 'mean' at the eval threshold of a cam_eval.csv."""
    df = read_table(path, CAM_FLAG_COLUMNS)
    rows = df[df["is_eval_threshold"].astype(bool)]
    if rows.empty:
        raise ValueError(f"{path}: no row with is_eval_threshold == True")
    row = rows.iloc[0]
    classes = [c for c in df.columns if c not in CAM_FLAG_COLUMNS]
    return pd.Series([*row[classes].astype(float), float(row["miou"])], index=[*classes, MEAN_ROW])


def mask_class_ious(path: Path) -> pd.Series:
    """Per-class IoU (fractions, index = class name, last 'mean') of a *_eval.csv table."""
    df = read_table(path, ("class", "iou"))
    return pd.Series(df["iou"].astype(float).to_numpy(), index=df["class"].astype(str).to_numpy())


def _save(fig: Figure, out_png: Path, dpi: int) -> Path:
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return out_png


# ----------------------------------------------------------------------------- plots


def plot_miou(summary_csv: Path, out_png: Path, dpi: int = DEFAULT_DPI) -> Path:
    """mIoU (%) per round, one line per stage, from a summary.csv."""
    df = read_table(summary_csv, ["round"]).sort_values("round")
    fig = Figure(figsize=FIG_INCHES, dpi=dpi, layout="constrained")
    ax = fig.add_subplot()
    for column, label in MIOU_SERIES.items():
        if column in df.columns and df[column].notna().any():
            ax.plot(df["round"], df[column], marker="o", label=label)
    ax.set_xticks(df["round"].astype(int).tolist())
    ax.set_xlabel("round t")
    ax.set_ylabel("mIoU (%)")
    ax.set_title("mIoU per round and stage")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no evaluations yet", transform=ax.transAxes, ha="center", va="center")
    return _save(fig, out_png, dpi)


CONFOUNDING_SERIES = {"pair": "pair confusion m(k->c)", "bg": "background leak (context classes)"}
CONFOUNDING_STAGES = {"cam": "CAM", "pseudo_mask": "pseudo-mask", "seg_val": "seg val"}


def plot_confounding(summary_csv: Path, out_png: Path, dpi: int = DEFAULT_DPI) -> Path:
    """The confounding measures per round from a summary.csv (columns cf_<stage>_<pair|bg>,
    conta_core.evaluation.confounding): one panel per measure, one line per stage."""
    df = read_table(summary_csv, ["round"]).sort_values("round")
    fig = Figure(figsize=(FIG_INCHES[0] * 2, FIG_INCHES[1]), dpi=dpi, layout="constrained")
    for i, (key, title) in enumerate(CONFOUNDING_SERIES.items()):
        ax = fig.add_subplot(1, len(CONFOUNDING_SERIES), i + 1)
        for stage, label in CONFOUNDING_STAGES.items():
            column = f"cf_{stage}_{key}"
            if column in df.columns and df[column].notna().any():
                ax.plot(df["round"], df[column], marker="o", label=label)
        ax.set_xticks(df["round"].astype(int).tolist())
        ax.set_xlabel("round t")
        ax.set_title(f"{title} (lower is better)")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "not measured", transform=ax.transAxes, ha="center", va="center")
    return _save(fig, out_png, dpi)


def plot_cam_sweep(curves: dict[str, Path], out_png: Path, dpi: int = DEFAULT_DPI) -> Path:
    """CAM mIoU (%) against the background threshold, one curve per entry of `curves`.

    curves: legend label (e.g. "round 0", "AMN round 0") -> cam_eval.csv. The eval
    threshold's point is drawn as an open circle, the best threshold's as a star.
    """
    if not curves:
        raise ValueError("plot_cam_sweep: no cam_eval.csv given")
    fig = Figure(figsize=FIG_INCHES, dpi=dpi, layout="constrained")
    ax = fig.add_subplot()
    for label, path in curves.items():
        df = read_table(path, CAM_FLAG_COLUMNS).sort_values("threshold")
        miou = df["miou"].astype(float) * PERCENT
        (line,) = ax.plot(df["threshold"], miou, label=label)
        for flag, marker, fill in (("is_eval_threshold", "o", "none"), ("is_best", "*", line.get_color())):
            sel = df[flag].astype(bool)
            ax.plot(df["threshold"][sel], miou[sel], marker, color=line.get_color(), markerfacecolor=fill, markersize=9)
    ax.set_xlabel("background threshold")
    ax.set_ylabel("CAM mIoU (%)")
    ax.set_title("CAM threshold sweep (o: eval threshold, *: best)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, out_png, dpi)


def plot_confounder(confounder_h5: Path, out_png: Path, dpi: int = DEFAULT_DPI) -> Path:
    """The confounder set c_1..c_n as an image grid (shared colour scale), titled with class
    names and the number of images averaged."""
    C, attrs = load_confounder(confounder_h5)
    if C.ndim != 3:
        raise ValueError(f"{confounder_h5}: dataset 'C' must be float32[n, h, w], got shape {C.shape}")
    n = len(C)
    names = attrs["classes"] or [f"c{i}" for i in range(n)]
    counts = attrs["image_counts"]
    ncols = max(1, math.ceil(math.sqrt(n)))
    nrows = max(1, math.ceil(n / ncols))
    fig = Figure(
        figsize=(ncols * PANEL_INCHES + PANEL_INCHES / 2, nrows * PANEL_INCHES + PANEL_INCHES / 3),
        dpi=dpi,
        layout="constrained",
    )
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    vmax = float(C.max(initial=0.0)) or 1.0
    image = None
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i >= n:
            continue
        image = ax.imshow(C[i], cmap=CONFOUNDER_COLORMAP, vmin=0.0, vmax=vmax, interpolation="nearest")
        count = f" ({counts[i]} img)" if i < len(counts) else ""
        ax.set_title(f"{names[i] if i < len(names) else i}{count}", fontsize="small")
    if image is not None:
        fig.colorbar(image, ax=axes.tolist(), shrink=0.8, label="class frequency")
    fig.suptitle(f"confounder set of round {attrs['round']} (X_m: {attrs['source']}, {C.shape[1]}x{C.shape[2]})")
    return _save(fig, out_png, dpi)


def _steps(df: pd.DataFrame) -> np.ndarray:
    for c in STEP_COLUMNS:
        if c in df.columns:
            return df[c].to_numpy()
    return np.arange(1, len(df) + 1)


def _moving_mean(values: np.ndarray) -> np.ndarray:
    window = max(1, len(values) // SMOOTH_POINTS)
    return pd.Series(values).rolling(window, min_periods=1).mean().to_numpy()


def plot_loss_curves(logs: dict[str, dict[int, Path]], out_png: Path, dpi: int = DEFAULT_DPI) -> Path:
    """Training loss per step: one panel per stage, one curve per round.

    logs: stage ("cls", "irn", "seg", ...) -> round -> train_log.csv (needs a loss column).
    Raw losses are drawn faint, their moving mean solid.
    """
    if not logs:
        raise ValueError("plot_loss_curves: no train_log.csv given")
    fig = Figure(figsize=(len(logs) * FIG_INCHES[1], FIG_INCHES[1]), dpi=dpi, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(logs), squeeze=False)).ravel()
    for ax, (stage, per_round) in zip(axes, logs.items()):
        for t, path in sorted(per_round.items()):
            df = read_table(path, ["loss"])
            x, loss = _steps(df), df["loss"].astype(float).to_numpy()
            (raw,) = ax.plot(x, loss, alpha=0.25, linewidth=0.8)
            marker = "." if len(loss) <= SMOOTH_POINTS else None  # short runs: show the points
            ax.plot(x, _moving_mean(loss), color=raw.get_color(), marker=marker, label=f"round {t}")
        ax.set_title(f"{stage} training loss")
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="small")
    axes[0].set_ylabel("loss")
    return _save(fig, out_png, dpi)


# ----------------------------------------------------------------------------- tables


def per_class_iou_table(evals: list[tuple[int, str, Path]]) -> pd.DataFrame:
    """Per-class IoU (%) table: rows (stage, class), one column per round ("round <t>").

    evals: (round, stage, csv) with stage "cam" for a cam_eval.csv (IoU at the eval
    threshold) and any other stage name for a *_eval.csv table. The 'mean' row is the mIoU.
    """
    if not evals:
        raise ValueError("per_class_iou_table: no evaluation CSV given")
    series: dict[tuple[str, int], pd.Series] = {}
    for t, stage, path in evals:
        series[(stage, int(t))] = cam_class_ious(path) if stage == "cam" else mask_class_ious(path)
    rounds = sorted({t for _, t in series})
    stages = list(dict.fromkeys(stage for stage, _ in series))
    blocks = []
    for stage in stages:
        cols = {f"round {t}": series[(stage, t)] for t in rounds if (stage, t) in series}
        block = pd.DataFrame(cols).reindex(columns=[f"round {t}" for t in rounds])
        order = [c for c in dict.fromkeys(i for s in cols.values() for i in s.index) if c != MEAN_ROW] + [MEAN_ROW]
        block = block.reindex([c for c in order if c in block.index])
        block.insert(0, "class", block.index)
        block.insert(0, "stage", stage)
        blocks.append(block.reset_index(drop=True))
    table = pd.concat(blocks, ignore_index=True)
    value_cols = [c for c in table.columns if c.startswith("round ")]
    table[value_cols] = (table[value_cols].astype(float) * PERCENT).round(2)
    return table


def write_per_class_iou(evals: list[tuple[int, str, Path]], out_csv: Path) -> pd.DataFrame:
    """per_class_iou_table written atomically to out_csv; returns the table."""
    table = per_class_iou_table(evals)
    write_csv(out_csv, table)
    return table


def plot_study_differences(analysis: pd.DataFrame, out_png: Path, dpi: int = DEFAULT_DPI) -> Path:
    """A study's paired differences per round with their 95 % t intervals: one panel per
    measure, one line per pair (conta_core.evaluation.study_analysis.analyze's table)."""
    measures = list(dict.fromkeys(analysis["measure"]))
    if not measures:  # a study without pairs (descriptive): say so instead of an empty canvas
        fig = Figure(figsize=(4.0, 1.5))
        fig.text(0.5, 0.5, "no pairs in this study:\nsee conditions.md", ha="center", va="center")
        return _save(fig, Path(out_png), dpi)
    cols = min(3, max(1, len(measures)))
    rows = math.ceil(len(measures) / cols)
    fig = Figure(figsize=(4.0 * cols, 3.0 * rows))
    for i, measure in enumerate(measures):
        ax = fig.add_subplot(rows, cols, i + 1)
        sub = analysis[analysis["measure"] == measure]
        for (a, b), part in sub.groupby(["treatment", "reference"], sort=False):
            part = part.sort_values("round")
            err = np.vstack([part["diff"] - part["ci_lo"], part["ci_hi"] - part["diff"]])
            ax.errorbar(part["round"], part["diff"], yerr=np.nan_to_num(err), marker="o", capsize=3, label=f"{a} - {b}")
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xticks(sorted(sub["round"].unique()))
        ax.set_title(measure, fontsize=9)
        ax.set_xlabel("round")
        ax.set_ylabel("difference (95 % t CI)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, Path(out_png), dpi)
