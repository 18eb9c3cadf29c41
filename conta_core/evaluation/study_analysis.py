"""The paired analysis of a study (conta_core.infra.study): per pair of conditions, measure and
round, the differences treatment - reference within each (replicate, seed).

    measures: DataFrame, one row per run and round: run, condition, seed, replicate, round,
              <summary columns> (the measures files of rule study_measures)
    paired_differences(measures, a, b, column, t) -> Series of d_i = a_i - b_i, i over the
              (replicate, seed) cells where both ran (n of them)

Per (pair, measure, round) `analyze` reports n, the means of both conditions, the mean
difference, its sd (ddof 1), the 95 % t interval mean +- t_{1-alpha/2, n-1} sd / sqrt(n), the
difference relative to the reference mean (and its interval, the same interval divided by
the reference mean's absolute value) where the measure asks for it, the power of the
two-sided paired t test against the effect (noncentral t, noncentrality effect sqrt(n) / sd)
and the seeds needed for the target power: the smallest n >= 2 with (t_{1-alpha/2, n-1} +
t_{power, n-1}) sd / sqrt(n) <= effect (the t-quantile approximation; z quantiles, 1.96 +
0.84, undercount small n), and
`detectable`, the effect these n units detect with the target power at the measured sd,
(t_{1-alpha/2, n-1} + t_{power, n-1}) sd / sqrt(n), in the column's units.

Effect [OURS, the issue's choice]: 2 mIoU points for `*_miou` columns, 20 % of the reference
mean for the others (confounding measures); a measure's `effect` overrides it (a fraction of
the reference mean when the measure is `relative`). An entry without `effect` takes the
`effect` of another entry of the same column and kind (absolute or relative), so a design
that sets the effect on a measure's primary round (segmentation 2.3 at round 3) applies it to
the secondary rounds of that measure too. [OURS]

`role` is primary where the measure is primary and the pair is one of the study's
`primary_pairs` (default: every pair), else secondary. `verdict` applies the study's
`decision` rule to the primary rows only (where the design sets the effect); empty for
secondary rows and rows without an interval:
* `improvement` (study 2, docs/study_em3.md; the default): for `*_miou` columns "improves"
  when the 95 % interval lies above 0, "effect ruled out" when its upper end is below the
  effect; for `cf_*` (confounding) columns "reduces" when it lies below 0, "effect ruled out"
  when its lower end is above -effect (the relative interval above -20 % at the default
  effect); both at once "improves; effect ruled out" (or "reduces; ..."), otherwise
  "inconclusive"; empty for columns of neither kind;
* `difference` (study 3, docs/study_table1.md: most ablations have no expected sign):
  "shown (+)" / "shown (-)" when the interval excludes 0, "effect ruled out" when it lies
  inside (-effect, +effect), both at once "shown (+); effect ruled out", otherwise
  "inconclusive".

A study without pairs (`pairs: []`, a descriptive study such as studies/default_seeds/:
the spread of one configuration over seeds) gets an empty table with the same columns
(ANALYSIS_COLUMNS); its result is `condition_summary`.

Round 0 is one set of jobs shared by the conditions of a unit (common random numbers), so
its measures must be the same in every condition's file (to the precision the measures files
keep: mIoU 2 decimals, confounding 4); `shared_round_differences` lists where they are not (a
continuation on another machine or commit rebuilt a unit's round 0 differently: the unit's
differences then also include the change of machine, and lose part of their pairing), and
`shared_round_markdown` says so under conditions.md. Every measure column is compared, not
only the study's measures (the provenance columns `commit` and `machine` are not measures:
`provenance_markdown` lists their values with the number of runs).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from conta_core.infra.study import PROVENANCE_COLUMNS

MAX_SEEDS = 1000  # seeds_needed gives up (NaN) beyond this
ANALYSIS_COLUMNS = [
    "treatment", "reference", "measure", "role", "round", "n", "mean_treatment", "mean_reference",
    "diff", "sd", "ci_lo", "ci_hi", "rel_diff", "rel_ci_lo", "rel_ci_hi", "effect", "power",
    "seeds_needed", "detectable", "verdict", "diff_by_replicate",
]  # fmt: skip


def seeds_needed(sd: float, effect: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest n >= 2 with (t_{1-alpha/2,n-1} + t_{power,n-1}) * sd / sqrt(n) <= effect
    (paired two-sided t test); NaN when sd or effect is not positive and finite, or n > MAX_SEEDS."""
    if not (np.isfinite(sd) and np.isfinite(effect)) or effect <= 0:
        return math.nan
    if sd == 0:
        return 2.0
    for n in range(2, MAX_SEEDS + 1):
        q = stats.t.ppf(1 - alpha / 2, n - 1) + stats.t.ppf(power, n - 1)
        if q * sd / math.sqrt(n) <= effect:
            return float(n)
    return math.nan


def detectable_effect(n: int, sd: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The effect the paired t test with n units detects with `power`: (t_{1-alpha/2,n-1} +
    t_{power,n-1}) * sd / sqrt(n) (the approximation seeds_needed inverts); NaN for n < 2."""
    if n < 2 or not np.isfinite(sd):
        return math.nan
    return float((stats.t.ppf(1 - alpha / 2, n - 1) + stats.t.ppf(power, n - 1)) * sd / math.sqrt(n))


def units_from_pilot(
    sds_effects: dict[str, tuple[float, float]],
    minimum: int,
    multiple: int,
    cap: int,
    alpha: float = 0.05,
    power: float = 0.8,
) -> tuple[int, dict[str, float], bool]:
    """A study's number of units from a pilot (study 2's rule, docs/study_em3.md): per measure
    (name -> (pilot sd of the paired differences, effect)) the t-quantile `seeds_needed`, the
    largest of them and `minimum`, rounded up to a multiple of `multiple` (units split equally
    between the dataset replicates); above `cap` (or not reachable) the cap. Returns (n, the
    needed n per measure, whether the cap applied)."""
    needed = {k: seeds_needed(sd, effect, alpha, power) for k, (sd, effect) in sds_effects.items()}
    worst = max(needed.values(), default=math.nan)
    n = max(minimum, int(worst)) if np.isfinite(worst) else math.inf
    n = int(math.ceil(n / multiple) * multiple) if np.isfinite(n) else n
    capped = not n <= cap
    return (cap if capped else n), needed, capped


def power_of(n: int, sd: float, effect: float, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t test with n pairs against a true mean difference
    `effect` (noncentral t with n - 1 degrees of freedom, noncentrality effect sqrt(n) / sd).
    The lower tail P(T < -crit) is taken as P(T' > crit) with T' of noncentrality -nc (the same
    number): scipy 1.17's nct.cdf returns NaN there for many (df, nc), nct.sf does not."""
    if n < 2 or not np.isfinite(sd) or not np.isfinite(effect):
        return math.nan
    if sd == 0:
        return 1.0
    df, nc = n - 1, effect * math.sqrt(n) / sd
    crit = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(crit, df, nc) + stats.nct.sf(crit, df, -nc))


def t_interval(d: np.ndarray, alpha: float = 0.05) -> tuple[float, float, float, float]:
    """(mean, sd, lo, hi) of the 1-alpha t interval of the mean of d (NaN sd/interval for n < 2)."""
    d = np.asarray(d, dtype=float)
    n = len(d)
    mean = float(d.mean()) if n else math.nan
    if n < 2:
        return mean, math.nan, math.nan, math.nan
    sd = float(d.std(ddof=1))
    half = stats.t.ppf(1 - alpha / 2, n - 1) * sd / math.sqrt(n)
    return mean, sd, mean - half, mean + half


def paired_differences(measures: pd.DataFrame, a: str, b: str, column: str, t: int) -> pd.DataFrame:
    """Columns replicate, seed, a, b, diff over the (replicate, seed) cells where both conditions
    have a value of `column` in round t (sorted by replicate, seed)."""
    rows = measures[measures["round"] == t]
    keys = ["replicate", "seed"]

    def side(c: str) -> pd.DataFrame:
        part = rows[rows["condition"] == c]
        return part[keys + [column]].rename(columns={column: c})

    both = side(a).merge(side(b), on=keys).dropna()
    both["diff"] = both[a] - both[b]
    return both.sort_values(keys).reset_index(drop=True)


DECISIONS = ("improvement", "difference")  # study.yaml `decision`


def verdict(column: str, ci_lo: float, ci_hi: float, effect: float, decision: str = "improvement") -> str:
    """The decision rule's word for one interval (see the module docstring)."""
    if decision not in DECISIONS:
        raise ValueError(f"decision: expected one of {DECISIONS}, got {decision!r}")
    if any(math.isnan(v) for v in (ci_lo, ci_hi, effect)):
        return ""
    if decision == "difference":
        shown = "shown (+)" if ci_lo > 0 else "shown (-)" if ci_hi < 0 else ""
        ruled_out = -effect < ci_lo and ci_hi < effect
        if shown and ruled_out:
            return f"{shown}; effect ruled out"
        return shown or ("effect ruled out" if ruled_out else "inconclusive")
    if column.endswith("_miou"):
        word, better, ruled_out = "improves", ci_lo > 0, ci_hi < effect
    elif column.startswith("cf_"):
        word, better, ruled_out = "reduces", ci_hi < 0, ci_lo > -effect
    else:
        return ""
    if better and ruled_out:
        return f"{word}; effect ruled out"
    return word if better else "effect ruled out" if ruled_out else "inconclusive"


def row_primary(measure: dict, a: str, b: str, primary_pairs: set) -> bool:
    return measure.get("role") == "primary" and (a, b) in primary_pairs


def declared_effects(specs: list[dict]) -> dict[tuple[str, bool], float]:
    """(column, relative) -> the first `effect` the study's measures declare for it."""
    out: dict[tuple[str, bool], float] = {}
    for m in specs:
        if "effect" in m:
            out.setdefault((m["column"], bool(m.get("relative", False))), m["effect"])
    return out


def measure_effect(measure: dict, ref_mean: float, power_cfg: dict, declared: dict | None = None) -> float:
    """The absolute effect to detect for `measure` (see the module docstring); `declared`:
    declared_effects of the study's measures, for entries without an `effect` of their own."""
    column, relative = measure["column"], measure.get("relative", False)
    effect = measure.get("effect", (declared or {}).get((column, bool(relative))))
    if effect is not None:
        return effect * abs(ref_mean) if relative else effect
    if column.endswith("_miou") and not relative:
        return power_cfg["miou_effect"]
    return power_cfg["relative_effect"] * abs(ref_mean)


def analyze(
    measures: pd.DataFrame,
    pairs: list,
    specs: list[dict],
    rounds: int,
    power_cfg: dict,
    primary_pairs: list | None = None,
    decision: str = "improvement",
) -> pd.DataFrame:
    """One row per (pair, measure, round): see the module docstring. primary_pairs: the pairs
    whose primary measures are primary (None: every pair); decision: the verdict's rule."""
    alpha, target = power_cfg["alpha"], power_cfg["power"]
    primary = {tuple(p) for p in (pairs if primary_pairs is None else primary_pairs)}
    declared = declared_effects(specs)
    out = []
    for a, b in pairs:
        for m in specs:
            column = m["column"]
            if column not in measures.columns:
                raise ValueError(
                    f"measure {column!r} is no column of the measures files ({', '.join(measures.columns)})"
                )
            for t in m.get("rounds") or range(1, rounds + 1):
                d = paired_differences(measures, a, b, column, t)
                n = len(d)
                mean, sd, lo, hi = t_interval(d["diff"].to_numpy(), alpha)
                ref = float(d[b].mean()) if n else math.nan
                effect = measure_effect(m, ref, power_cfg, declared) if n else math.nan
                by_rep = d.groupby("replicate")["diff"].mean()
                is_primary = row_primary(m, a, b, primary)
                row = {
                    "treatment": a,
                    "reference": b,
                    "measure": column,
                    "role": "primary" if is_primary else "secondary",
                    "round": t,
                    "n": n,
                    "mean_treatment": float(d[a].mean()) if n else math.nan,
                    "mean_reference": ref,
                    "diff": mean,
                    "sd": sd,
                    "ci_lo": lo,
                    "ci_hi": hi,
                    "rel_diff": math.nan,
                    "rel_ci_lo": math.nan,
                    "rel_ci_hi": math.nan,
                    "effect": effect,
                    "power": power_of(n, sd, effect, alpha),
                    "seeds_needed": seeds_needed(sd, effect, alpha, target),
                    "detectable": detectable_effect(n, sd, alpha, target),
                    "verdict": verdict(column, lo, hi, effect, decision) if is_primary else "",
                    "diff_by_replicate": "; ".join(f"{k}: {v:.4g}" for k, v in by_rep.items()),
                }
                if m.get("relative", False) and n and ref != 0:
                    row.update(rel_diff=mean / abs(ref), rel_ci_lo=lo / abs(ref), rel_ci_hi=hi / abs(ref))
                out.append(row)
    return pd.DataFrame(out, columns=ANALYSIS_COLUMNS)


def condition_summary(measures: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Per condition, round and column: n (units), mean, sd (ddof 1), min and max over the
    units: what a run of that condition gives on any CPU, as a mean and spread (the paired
    table says whether conditions differ). Rows sorted by condition (sheet order) and round."""
    out = []
    conditions = list(dict.fromkeys(measures["condition"]))
    for c in conditions:
        part = measures[measures["condition"] == c]
        for t in sorted(part["round"].unique()):
            rows = part[part["round"] == t]
            for column in dict.fromkeys(columns):
                v = rows[column].dropna().astype(float) if column in rows else pd.Series(dtype=float)
                out.append(
                    {
                        "condition": c,
                        "round": int(t),
                        "measure": column,
                        "n": len(v),
                        "mean": float(v.mean()) if len(v) else math.nan,
                        "sd": float(v.std(ddof=1)) if len(v) > 1 else math.nan,
                        "min": float(v.min()) if len(v) else math.nan,
                        "max": float(v.max()) if len(v) else math.nan,
                    }
                )
    return pd.DataFrame(out, columns=["condition", "round", "measure", "n", "mean", "sd", "min", "max"])


def condition_markdown(summary: pd.DataFrame) -> str:
    """condition_summary as one Markdown row per (condition, round), "mean ± sd (n)" per measure."""
    measures = list(dict.fromkeys(summary["measure"]))
    lines = ["| condition | round | " + " | ".join(measures) + " |", "|" + " --- |" * (len(measures) + 2)]
    for (c, t), part in summary.groupby(["condition", "round"], sort=False):
        cells = []
        for m in measures:
            r = part[part["measure"] == m].iloc[0]
            sd = "" if math.isnan(r["sd"]) else f" ± {r['sd']:.3g}"
            cells.append("" if r["n"] == 0 else f"{r['mean']:.4g}{sd} ({r['n']})")
        lines.append(f"| {c} | {t} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _same(values: pd.Series) -> bool:
    """Whether every value is the same (NaN equals NaN)."""
    if values.isna().all():
        return True
    return bool(values.notna().all() and values.nunique() == 1)


def shared_round_differences(measures: pd.DataFrame, columns: list[str], round_: int = 0) -> pd.DataFrame:
    """Per unit (replicate, seed) with more than one condition, and column: where round
    `round_`'s value is not the same in every condition (NaN equals NaN). Columns replicate,
    seed, measure, values ("condition: value; ..."); empty where all agree."""
    rows = measures[measures["round"] == round_]
    out = []
    for (rep, seed), part in rows.groupby(["replicate", "seed"], sort=True):
        if part["condition"].nunique() < 2:
            continue
        for column in dict.fromkeys(columns):
            if column not in part or _same(part[column]):
                continue
            values = "; ".join(
                f"{c}: {x:.6g}" if isinstance(x, float) else f"{c}: {x}"
                for c, x in zip(part["condition"], part[column])
            )
            out.append({"replicate": rep, "seed": seed, "measure": column, "values": values})
    return pd.DataFrame(out, columns=["replicate", "seed", "measure", "values"])


def shared_round_markdown(measures: pd.DataFrame, columns: list[str], round_: int = 0) -> str:
    """A paragraph (and a table where units differ) on whether round `round_`, shared by the
    conditions of a unit, has the same measures in every condition; "" when no unit has more
    than one condition (a descriptive study)."""
    rows = measures[measures["round"] == round_]
    units = rows.groupby(["replicate", "seed"])["condition"].nunique()
    units = units[units > 1]
    if units.empty:
        return ""
    diffs = shared_round_differences(measures, columns, round_)
    bad = diffs.groupby(["replicate", "seed"]).ngroups if len(diffs) else 0
    text = (
        f"\nRound {round_} is shared by the conditions of a unit: {len(units) - bad} of {len(units)} units "
        f"with more than one finished condition have the same round-{round_} measures in every condition "
        "(to the precision of the measures files).\n"
    )
    if bad:
        text += (
            f"\nUnits whose round {round_} differs between conditions (rebuilt on another machine or "
            "commit: their differences also include that change, and are less paired):\n\n"
            "| replicate | seed | measure | values |\n| --- | --- | --- | --- |\n"
        )
        text += "".join(f"| {r.replicate} | {r.seed} | {r.measure} | {r.values} |\n" for r in diffs.itertuples())
    return text


def provenance_markdown(measures: pd.DataFrame, columns: list[str] = PROVENANCE_COLUMNS) -> str:
    """Which commits and machines wrote the measures files: per provenance column, each value
    with its number of runs (files written before the columns existed count as "not recorded");
    "" when no file records any."""
    present = [c for c in columns if c in measures and measures[c].notna().any()]
    if not present:
        return ""
    runs = measures.drop_duplicates("run")
    text = "\nProvenance of the measures files (runs per value):\n\n"
    for c in present:
        counts = runs[c].fillna("not recorded").value_counts(sort=False)
        text += f"- {c}: " + "; ".join(f"{v} ({n})" for v, n in counts.items()) + "\n"
    return text


def markdown_table(df: pd.DataFrame) -> str:
    """The analysis as a Markdown table (3 decimals), the columns of ANALYSIS_COLUMNS."""
    cols = ANALYSIS_COLUMNS

    def fmt(v) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.3f}"
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for _, r in df.iterrows()]
    return "\n".join(lines) + "\n"
