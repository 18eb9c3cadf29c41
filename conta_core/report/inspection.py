"""What exists in a run folder: the generated pre-training, then per round and stage (both
methods: the AMN stages appear when the run has any), artifact counts against the manifest,
missing shards, checkpoints (an interrupted training shows the step a rerun resumes at), the
confounder set, the context diagnostics (status "inert" when the context carries no signal)
and the mIoU of the evaluation CSVs. Paths and stages come from conta_core.infra.layout.

`conta inspect results/<run>` prints `format_inspection(inspect_run(run_dir))`.
Nothing here raises on a broken artifact: it is reported as status "error" with the reason.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from conta_core.data.manifest import Manifest
from conta_core.infra.fileio import read_json
from conta_core.infra.layout import (
    CONFOUNDER_FILE,
    DIAGNOSTICS_FILE,
    EVALS,
    MODEL_FILE,
    MODELS,
    RESUME_SUFFIX,
    STAGES,
    RunLayout,
    Stage,
    for_method,
    resume_steps,
)
from conta_core.infra.methods import METHOD_NAMES
from conta_core.infra.shards import shard_ids

COLUMNS = ["round", "artifact", "status", "found", "expected", "detail"]
PERCENT = 100.0
BYTES_PER_MB = 1024 * 1024
ROUND_DIR = re.compile(r"^round(\d+)$")
OK, PARTIAL, MISSING, ERROR = "ok", "partial", "missing", "error"
INERT = "inert"  # context_diagnostics.json says the context carries no signal
MEAN_ROW = "mean"  # the mIoU row of conta_core.evaluation.evaluate tables


SHARDED = tuple(STAGES.values())
ORDER = (
    "cls",
    "cam",
    "ir_label",
    "amn",
    "amn_cam",
    "amn_ir_label",
    "irn",
    "aff",
    "pseudo_mask",
    "seg",
    "seg_pred_train",
    "seg_pred_val",
)  # a round's artifacts in the order the pipeline makes them


def _row(
    t: int, artifact: str, status: str, found: int | None = None, expected: int | None = None, detail: str = ""
) -> dict:
    return {"round": t, "artifact": artifact, "status": status, "found": found, "expected": expected, "detail": detail}


def find_rounds(run_dir: Path) -> list[int]:
    """Sorted t of the round<t> folders of a run."""
    if not Path(run_dir).is_dir():
        return []
    return sorted(int(m.group(1)) for p in Path(run_dir).iterdir() if p.is_dir() and (m := ROUND_DIR.match(p.name)))


def infer_num_shards(run_dir: Path, rounds: list[int]) -> int:
    """1 + the largest numeric shard folder of any sharded artifact (1 when there is none)."""
    largest = -1
    for t in rounds:
        for art in SHARDED:
            folder = Path(run_dir) / f"round{t}" / art.folder
            if folder.is_dir():
                largest = max([largest, *(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())])
    return largest + 1 if largest >= 0 else 1


def _files_with_suffix(folder: Path, suffix: str) -> set[str]:
    """Ids of the <id><suffix> files in folder (hidden temporary files excluded)."""
    if not folder.is_dir():
        return set()
    return {p.name[: -len(suffix)] for p in folder.iterdir() if p.name.endswith(suffix) and not p.name.startswith(".")}


def inspect_sharded(round_dir: Path, t: int, art: Stage, manifest: Manifest | None, num_shards: int) -> dict:
    """Status row of one sharded artifact: files found per shard against the manifest split."""
    base = round_dir / art.folder
    ids = manifest.ids(art.split) if manifest is not None and art.split in manifest.splits else None
    if not base.is_dir():
        return _row(t, art.folder, MISSING, 0, None if ids is None else len(ids), "no folder")
    found, parts, missing_shards, extra = 0, [], [], 0
    for s in range(num_shards):
        present = _files_with_suffix(base / str(s), art.suffix)
        if not (base / str(s)).is_dir():
            missing_shards.append(s)
        if ids is None:
            found += len(present)
            parts.append(f"{s}:{len(present)}")
            continue
        want = set(shard_ids(ids, s, num_shards))
        n = len(want & present)
        found += n
        extra += len(present - want)
        parts.append(f"{s}:{n}/{len(want)}")
    expected = None if ids is None else len(ids)
    status = OK if expected is not None and found == expected and not missing_shards else PARTIAL
    if expected is None:
        status = OK if found and not missing_shards else PARTIAL
    detail = "shards " + " ".join(parts)
    if missing_shards:
        detail += f"; missing shards {','.join(map(str, missing_shards))}"
    if extra:
        detail += f"; {extra} file(s) of other shards/ids"
    if ids is None:
        detail += "; no manifest split " + art.split
    return _row(t, art.folder, status, found, expected, detail)


def inspect_checkpoint(round_dir: Path, t: int, rel: str) -> dict:
    """A trained model: ok, missing, or partial when an interrupted job left resume checkpoints
    (conta_core.infra.training: a rerun continues from the newest)."""
    path = round_dir / rel
    if not path.is_file():
        steps = resume_steps(path)
        if steps:
            return _row(t, rel, PARTIAL, detail=f"interrupted; a rerun resumes at step {steps[0][0]}")
        return _row(t, rel, MISSING)
    return _row(t, rel, OK, detail=f"{path.stat().st_size / BYTES_PER_MB:.1f} MB")


def inspect_confounder(round_dir: Path, t: int) -> dict:
    from conta_core.steps.confounder import load_confounder

    path = round_dir / CONFOUNDER_FILE
    if not path.is_file():
        return _row(t, CONFOUNDER_FILE, MISSING)
    try:
        C, attrs = load_confounder(path)
    except ValueError as e:
        return _row(t, CONFOUNDER_FILE, ERROR, detail=str(e))
    shape = "x".join(str(s) for s in C.shape[1:])
    return _row(t, CONFOUNDER_FILE, OK, detail=f"n={C.shape[0]} maps of {shape}, source {attrs['source']}")


def inspect_context(round_dir: Path, t: int) -> list[dict]:
    """The context diagnostics row of a round (none if it has no context_diagnostics.json):
    status "inert" with the reasons when the context carries no signal, else "ok"."""
    path = round_dir / DIAGNOSTICS_FILE
    if not path.exists():
        return []
    try:
        d = read_json(path)
        inject = "" if d.get("inject", "m") == "m" else f" (inject {d['inject']}: X_m in M's place)"
        change = "undefined" if d["cam_change"] is None else f"{d['cam_change']:.4f}"
        k = d.get("cam_change_undefined") or 0
        undefined = f" (undefined for {k} of {d.get('num_images', '?')} images)" if k else ""
        detail = (
            f"{d['mode']}{inject}: alpha entropy {d['alpha_entropy_mean']:.4f}, M cv {d['m_cv']:.3g}, "
            f"CAM change {change}{undefined}"
        )
    except (ValueError, KeyError) as e:
        return [_row(t, path.name, ERROR, detail=f"unreadable: {e}")]
    if d.get("inert"):
        return [_row(t, path.name, INERT, detail=detail + " -- " + "; ".join(d.get("inert_reasons", [])))]
    return [_row(t, path.name, OK, detail=detail)]


def eval_detail(path: Path) -> str:
    """The mIoU of an evaluation CSV as text (cam_eval: at the eval threshold and the best)."""
    from conta_core.report.summary import cam_scores

    if path.name in (EVALS["cam"].file, EVALS["amn_cam"].file):
        at_eval, best, best_thr = cam_scores(path)
        return f"mIoU {at_eval * PERCENT:.2f}% at the eval threshold, best {best * PERCENT:.2f}% at {best_thr:g}"
    df = pd.read_csv(path)
    mean = df.loc[df["class"] == MEAN_ROW, "iou"]
    if mean.empty:
        raise ValueError(f"{path}: no {MEAN_ROW!r} row")
    return f"mIoU {float(mean.iloc[0]) * PERCENT:.2f}%"


def inspect_eval(round_dir: Path, t: int, name: str) -> dict:
    path = round_dir / name
    if not path.is_file():
        return _row(t, name, MISSING)
    try:
        return _row(t, name, OK, detail=eval_detail(path))
    except (ValueError, KeyError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        return _row(t, name, ERROR, detail=str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}")


def load_run_manifest(run_dir: Path) -> tuple[Manifest | None, str]:
    """(manifest or None, a note) from run_dir/data/manifest.json."""
    path = Path(RunLayout(run_dir).manifest)
    if not path.is_file():
        return None, f"no manifest at {path}"
    try:
        m = Manifest.load(path)
    except (ValueError, KeyError) as e:
        return None, str(e)
    splits = ", ".join(f"{k} {len(v)}" for k, v in m.splits.items())
    return m, f"manifest {m.name}: {m.num_fg} foreground classes; {splits} images"


def run_method(run_dir: Path, rounds: list[int]) -> str:
    """The first method of conta_core.infra.methods (after irn) of which a round holds an
    artifact that irn does not make; else irn."""
    base = {m.folder for m in for_method(MODELS, "irn")} | {st.folder for st in for_method(STAGES, "irn")}
    for name in METHOD_NAMES[1:]:
        own = [m.folder for m in for_method(MODELS, name)] + [st.folder for st in for_method(STAGES, name)]
        own = [f for f in own if f not in base]
        if any((Path(run_dir) / f"round{t}" / f).exists() for t in rounds for f in own):
            return name
    return "irn"


def inspect_pretrain(run_dir: Path) -> str:
    """One line on the generated pre-training weights (pretrain/<backbone>.pth)."""
    folder = Path(run_dir) / "pretrain"
    weights = sorted(folder.glob("*.pth")) if folder.is_dir() else []
    if not weights:
        resume = sorted(folder.glob("*.pth" + RESUME_SUFFIX)) if folder.is_dir() else []
        return "pretrain: interrupted (a rerun resumes)" if resume else "pretrain: none"
    return "pretrain: " + ", ".join(f"{w.name} ({w.stat().st_size / BYTES_PER_MB:.1f} MB)" for w in weights)


def inspect_run(run_dir: Path, num_shards: int | None = None) -> pd.DataFrame:
    """One row per (round, artifact) with columns round, artifact, status (ok | partial |
    missing | error | inert), found, expected, detail. num_shards None: infer_num_shards."""
    run_dir = Path(run_dir)
    rounds = find_rounds(run_dir)
    manifest, _ = load_run_manifest(run_dir)
    shards = num_shards if num_shards is not None else infer_num_shards(run_dir, rounds)
    if shards < 1:
        raise ValueError(f"inspect: number of shards must be >= 1, got {shards}")
    method = run_method(run_dir, rounds)
    models = {m.name: m for m in for_method(MODELS, method)}
    stages = {st.name: st for st in for_method(STAGES, method)}
    rows = []
    for t in rounds:
        rd = run_dir / f"round{t}"
        for name in ORDER:
            if name in models:
                rows.append(inspect_checkpoint(rd, t, f"{models[name].folder}/{MODEL_FILE}"))
            elif name in stages:
                rows.append(inspect_sharded(rd, t, stages[name], manifest, shards))
        rows += [inspect_confounder(rd, t)]
        rows += inspect_context(rd, t)
        rows += [inspect_eval(rd, t, e.file) for e in for_method(EVALS, method)]
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.astype({"found": "Int64", "expected": "Int64"})


def format_inspection(run_dir: Path, table: pd.DataFrame, num_shards: int | None = None) -> str:
    """Human-readable report: header (manifest, shards), the table, and a status tally."""
    run_dir = Path(run_dir)
    _, note = load_run_manifest(run_dir)
    rounds = find_rounds(run_dir)
    shards = num_shards if num_shards is not None else infer_num_shards(run_dir, rounds)
    lines = [
        f"run {run_dir}",
        note,
        inspect_pretrain(run_dir),
        f"rounds: {', '.join(map(str, rounds)) or 'none'}; shards: {shards}",
        "",
    ]
    if table.empty:
        lines.append("no round folders yet")
        return "\n".join(lines)
    lines += _aligned(table)
    counts = table["status"].value_counts()
    lines += [
        "",
        "  ".join(f"{k}: {counts.get(k, 0)}" for k in (OK, PARTIAL, MISSING, ERROR))
        + (f"  {INERT}: {counts[INERT]} (the context carries no signal; docs/context.md)" if INERT in counts else ""),
    ]
    return "\n".join(lines)


def _count(found, expected) -> str:
    if pd.isna(found):
        return ""
    return f"{found}" if pd.isna(expected) else f"{found}/{expected}"


def _aligned(table: pd.DataFrame) -> list[str]:
    """Left-aligned text columns round | artifact | status | count | detail, a blank line between rounds."""
    cells = [["round", "artifact", "status", "count", "detail"]]
    cells += [
        [str(r["round"]), r["artifact"], r["status"], _count(r["found"], r["expected"]), r["detail"]]
        for _, r in table.iterrows()
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]) - 1)]
    lines, last = [], None
    for row in cells:
        if last is not None and row[0] != last and last != "round":
            lines.append("")
        last = row[0]
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
    return [line.rstrip() for line in lines]
