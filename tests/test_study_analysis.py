"""The paired analysis of a study (conta_core.evaluation.study_analysis) on known numbers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from conta_core.evaluation.study_analysis import analyze, markdown_table, power_of, seeds_needed, t_interval

POWER = {"alpha": 0.05, "power": 0.8, "miou_effect": 2.0, "relative_effect": 0.2}


def test_t_interval_matches_scipy():
    d = np.array([1.0, 2.5, -0.5, 3.0, 1.5])
    mean, sd, lo, hi = t_interval(d)
    ref = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert mean == pytest.approx(d.mean())
    assert sd == pytest.approx(d.std(ddof=1))
    assert (lo, hi) == pytest.approx(ref)


def test_power_matches_the_noncentral_t_and_a_simulation():
    n, sd, effect = 6, 2.0, 2.0
    p = power_of(n, sd, effect)
    crit = stats.t.ppf(0.975, n - 1)
    nc = effect * math.sqrt(n) / sd
    assert p == pytest.approx(stats.nct.sf(crit, n - 1, nc) + stats.nct.cdf(-crit, n - 1, nc))
    rng = np.random.default_rng(0)
    sims = rng.normal(effect, sd, size=(20000, n))
    pvals = stats.ttest_1samp(sims, 0.0, axis=1).pvalue
    assert p == pytest.approx((pvals < 0.05).mean(), abs=0.015)


def test_seeds_needed_uses_t_quantiles():
    # the issue's case: z quantiles, ceil(((1.96 + 0.84) sd / effect)^2), give 1 seed for
    # sd / effect = 0.34; with t quantiles n = 3 fails ((4.30 + 1.06) * 0.34 / sqrt 3 > 1), n = 4 holds
    assert math.ceil(((1.96 + 0.8416) * 0.34) ** 2) == 1
    assert seeds_needed(0.34, 1.0) == 4
    for sd in (0.5, 1.0, 3.0):
        n = int(seeds_needed(sd, 2.0))
        q = lambda m: stats.t.ppf(0.975, m - 1) + stats.t.ppf(0.8, m - 1)  # noqa: E731
        assert q(n) * sd / math.sqrt(n) <= 2.0 < q(n - 1) * sd / math.sqrt(n - 1) or n == 2
    assert math.isnan(seeds_needed(1.0, 0.0))


def _measures() -> pd.DataFrame:
    rows = []
    for rep in (0, 1):
        for seed in (0, 1, 2):
            base = 50 + seed + 3 * rep
            for cond, shift in (("conta", 1.0 + 0.5 * seed), ("placebo", 0.0)):
                rows.append({"run": f"{cond}_{rep}_{seed}", "condition": cond, "seed": seed, "replicate": rep, "round": 1,
                             "seg_val_miou": base + shift, "cf_pair": 0.5 - 0.1 * shift})  # fmt: skip
    return pd.DataFrame(rows)


def test_analyze_pairs_within_replicate_and_seed():
    specs = [{"column": "seg_val_miou", "role": "primary"}, {"column": "cf_pair", "relative": True}]
    df = analyze(_measures(), [("conta", "placebo")], specs, 1, POWER)
    miou = df[df["measure"] == "seg_val_miou"].iloc[0]
    d = np.array([1.0, 1.5, 2.0, 1.0, 1.5, 2.0])  # conta - placebo per (replicate, seed)
    assert miou["n"] == 6
    assert miou["diff"] == pytest.approx(d.mean())
    assert miou["sd"] == pytest.approx(d.std(ddof=1))
    assert miou["effect"] == 2.0
    assert miou["seeds_needed"] == seeds_needed(d.std(ddof=1), 2.0)
    n = len(d)
    assert miou["detectable"] == pytest.approx(
        (stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.8, n - 1)) * d.std(ddof=1) / math.sqrt(n)
    )
    assert miou["diff_by_replicate"] == "0: 1.5; 1: 1.5"  # the mean per dataset replicate
    cf = df[df["measure"] == "cf_pair"].iloc[0]
    assert cf["mean_reference"] == pytest.approx(0.5)
    assert cf["effect"] == pytest.approx(0.1)  # 20 % of the reference mean
    assert cf["rel_diff"] == pytest.approx(-0.1 * d.mean() / 0.5)
    assert "| conta | placebo | seg_val_miou |" in markdown_table(df)


def test_power_is_finite_where_scipys_noncentral_cdf_is_not():
    """scipy 1.17's nct.cdf gives NaN for the lower tail at e.g. df 1, nc 8.5 (the pilot's
    seg val rows); the power is the upper tail plus a negligible lower one there."""
    from conta_core.evaluation.study_analysis import power_of

    for n, sd, effect in ((2, 0.332, 2.0), (2, 0.332, 2.3), (6, 0.2, 2.0), (12, 1.0, 2.0)):
        p = power_of(n, sd, effect)
        crit = stats.t.ppf(0.975, n - 1)
        assert np.isfinite(p) and p == pytest.approx(stats.nct.sf(crit, n - 1, effect * math.sqrt(n) / sd), abs=1e-12)
    # where both tails matter: symmetric in the sign of the effect, alpha at effect 0
    assert power_of(4, 1.0, 0.0) == pytest.approx(0.05)
    assert power_of(4, 1.0, 1.0) == pytest.approx(power_of(4, 1.0, -1.0))


def test_an_entry_without_effect_takes_its_columns_declared_effect():
    """Study 2 sets 2.3 on seg val's primary round 3; its secondary rounds 1-2 are the same
    measure, so their power is against 2.3 too, not the default 2.0 (the audit's finding)."""
    m = pd.concat([_measures().assign(round=t) for t in (1, 2)])
    specs = [
        {"column": "seg_val_miou", "role": "primary", "rounds": [2], "effect": 2.3},
        {"column": "seg_val_miou", "role": "secondary", "rounds": [1]},
        {"column": "cf_pair", "role": "secondary", "rounds": [1]},  # absolute: the default
        {"column": "cf_pair", "role": "primary", "rounds": [2], "relative": True, "effect": 0.3},
    ]
    df = analyze(m, [("conta", "placebo")], specs, 2, POWER).set_index(["measure", "round"])
    assert df.loc[("seg_val_miou", 1), "effect"] == df.loc[("seg_val_miou", 2), "effect"] == 2.3
    assert df.loc[("cf_pair", 2), "effect"] == pytest.approx(0.3 * 0.5)
    assert df.loc[("cf_pair", 1), "effect"] == pytest.approx(0.2 * 0.5)  # another kind: not taken


def test_verdict_follows_the_decision_rules_of_studies_2_and_3():
    from conta_core.evaluation.study_analysis import verdict

    assert verdict("seg_val_miou", 0.5, 3.0, 2.3) == "improves"
    assert verdict("seg_val_miou", 0.2, 1.0, 2.3) == "improves; effect ruled out"
    assert verdict("pseudo_mask_miou", -1.0, 1.9, 2.0) == "effect ruled out"
    assert verdict("pseudo_mask_miou", -1.0, 2.5, 2.0) == "inconclusive"
    assert verdict("cf_pseudo_mask_bg", -0.05, -0.01, 0.04) == "reduces"  # lower is better
    assert verdict("cf_pseudo_mask_bg", -0.03, 0.01, 0.04) == "effect ruled out"
    assert verdict("cf_pseudo_mask_bg", -0.05, 0.01, 0.04) == "inconclusive"
    assert verdict("ctx_m_cv", 0.1, 0.2, 0.1) == verdict("seg_val_miou", math.nan, math.nan, 2.0) == ""
    # study 3: two-sided, for any column
    assert verdict("seg_val_miou", -3.0, -0.5, 2.3, "difference") == "shown (-)"
    assert verdict("cf_cam_bg", 0.01, 0.02, 0.05, "difference") == "shown (+); effect ruled out"
    assert verdict("pseudo_mask_miou", -1.0, 1.9, 2.0, "difference") == "effect ruled out"
    assert verdict("pseudo_mask_miou", -2.5, 1.0, 2.0, "difference") == "inconclusive"
    with pytest.raises(ValueError, match="decision"):
        verdict("seg_val_miou", 0.0, 1.0, 2.0, "one-sided")


def test_only_primary_pairs_and_measures_are_primary_and_get_a_verdict():
    m = _measures()
    m2 = m[m["condition"] == "placebo"].assign(condition="none", seg_val_miou=lambda d: d["seg_val_miou"] - 1.0)
    m = pd.concat([m, m2], ignore_index=True)
    specs = [
        {"column": "seg_val_miou", "role": "primary"},
        {"column": "cf_pair", "role": "secondary", "relative": True},
    ]
    pairs = [("conta", "placebo"), ("placebo", "none")]
    df = analyze(m, pairs, specs, 1, POWER, primary_pairs=[("conta", "placebo")]).set_index(["reference", "measure"])
    assert df.loc[("placebo", "seg_val_miou"), "role"] == "primary"
    # d = 1..2, mean 1.5: above 0 and below the effect 2.0
    assert df.loc[("placebo", "seg_val_miou"), "verdict"] == "improves; effect ruled out"
    assert df.loc[("none", "seg_val_miou"), ["role", "verdict"]].tolist() == ["secondary", ""]
    assert df.loc[("placebo", "cf_pair"), ["role", "verdict"]].tolist() == ["secondary", ""]
    both = analyze(m, pairs, specs, 1, POWER).set_index(["reference", "measure"])  # default: every pair
    assert both.loc[("none", "seg_val_miou"), "role"] == "primary" and both.loc[("none", "seg_val_miou"), "verdict"]
    md = markdown_table(df.reset_index())
    assert "rel_ci_lo" in md.splitlines()[0] and "diff_by_replicate" in md.splitlines()[0]


def test_analyze_names_a_missing_measure():
    with pytest.raises(ValueError, match="nope"):
        analyze(_measures(), [("conta", "placebo")], [{"column": "nope"}], 1, POWER)


def test_units_from_pilot_follows_study_2s_rule():
    from conta_core.evaluation.study_analysis import detectable_effect, seeds_needed, units_from_pilot

    # sd 1.5 against 2.0 needs 7 units by t quantiles -> 8 (even); sd 0.5 needs 3 -> the minimum 6
    assert seeds_needed(1.5, 2.0) == 7
    n, needed, capped = units_from_pilot({"pseudo": (1.5, 2.0), "seg": (0.5, 2.3)}, minimum=6, multiple=2, cap=12)
    assert (n, capped) == (8, False) and needed["seg"] == 3
    assert units_from_pilot({"pseudo": (0.1, 2.0)}, 6, 2, 12)[0] == 6
    n, needed, capped = units_from_pilot({"pseudo": (4.0, 2.0)}, minimum=6, multiple=2, cap=12)
    assert (n, capped) == (12, True) and needed["pseudo"] > 12
    assert detectable_effect(12, 4.0) > 2.0 > detectable_effect(int(needed["pseudo"]), 4.0)
    assert units_from_pilot({"pseudo": (float("nan"), 2.0)}, 6, 2, 12)[2]  # no sd: the cap


def test_study_sheet_tool_sizes_the_sheet_from_the_pilot_and_alternates_replicates(tmp_path, capsys):
    """tools/study_sheet.py: n from the pilot's sd (sd 1.5 vs 2.0 -> 8 units), units listed seed
    by seed (step 100: round t trains with seed + t) with the replicates alternating, so a study
    cut short stays balanced."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "study_sheet", Path(__file__).resolve().parents[1] / "tools" / "study_sheet.py"
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    pilot = tmp_path / "pairs.csv"
    pd.DataFrame(
        [
            {"treatment": "conta", "reference": "placebo", "measure": "pseudo_mask_miou", "round": 3, "sd": 1.5},
            {"treatment": "conta", "reference": "placebo", "measure": "seg_val_miou", "round": 3, "sd": 0.5},
            {"treatment": "conta", "reference": "placebo", "measure": "pseudo_mask_miou", "round": 1, "sd": 9.0},
        ]
    ).to_csv(pilot, index=False)
    out = tmp_path / "runs.tsv"
    args = ["--pilot", str(pilot), "--pair", "conta,placebo", "--round", "3"]
    args += ["--measure", "pseudo_mask_miou=2.0", "--measure", "seg_val_miou=2.3", "--minimum", "6", "--cap", "12"]
    args += ["--replicates", "101,102", "--first-seed", "1001", "--conditions", "conta,placebo", "--out", str(out)]
    assert tool.main(args) == 0
    sheet = pd.read_csv(out, sep="\t")
    assert len(sheet) == 8 * 2
    units = list(dict.fromkeys(zip(sheet["replicate"], sheet["seed"])))
    assert units[:3] == [(101, 1001), (102, 1001), (101, 1101)] and len(units) == 8  # seed step 100
    assert sheet["run"].iloc[1] == "placebo_r101_s1001" and sheet["overlay"].iloc[1] == "{context: {mode: placebo}}"
    assert "units: 8 (4 seeds x 2 replicates)" in capsys.readouterr().out


def test_condition_summary_gives_mean_and_spread_per_condition_and_round():
    from conta_core.evaluation.study_analysis import condition_markdown, condition_summary

    m = _measures()
    summary = condition_summary(m, ["seg_val_miou", "seg_val_miou", "nope"])
    row = summary[(summary["condition"] == "conta") & (summary["round"] == 1) & (summary["measure"] == "seg_val_miou")]
    v = m[(m["condition"] == "conta") & (m["round"] == 1)]["seg_val_miou"]
    assert row["n"].item() == len(v) and row["mean"].item() == pytest.approx(v.mean())
    assert row["sd"].item() == pytest.approx(v.std(ddof=1)) and row["max"].item() == v.max()
    assert set(summary["measure"]) == {"seg_val_miou", "nope"}  # a column twice counts once
    assert (summary[summary["measure"] == "nope"]["n"] == 0).all()
    md = condition_markdown(summary)
    assert md.splitlines()[0] == "| condition | round | seg_val_miou | nope |"
    assert f"{v.mean():.4g} ± {v.std(ddof=1):.3g} ({len(v)})" in md


def test_shared_round_0_is_checked_to_agree_across_a_units_conditions():
    from conta_core.evaluation.study_analysis import shared_round_differences, shared_round_markdown

    rows = []
    for seed in (0, 1):
        for cond in ("conta", "placebo", "none"):
            rows.append({"condition": cond, "seed": seed, "replicate": 7, "round": 0, "seg_val_miou": 40.0 + seed,
                         "ctx_m_cv": float("nan")})  # fmt: skip
    rows.append({"condition": "conta", "seed": 2, "replicate": 7, "round": 0, "seg_val_miou": 1.0})  # one condition
    m = pd.DataFrame(rows)
    columns = ["seg_val_miou", "ctx_m_cv", "absent"]
    assert shared_round_differences(m, columns).empty  # NaN in every condition agrees
    assert "2 of 2 units" in shared_round_markdown(m, columns) and "|" not in shared_round_markdown(m, columns)
    m.loc[(m["seed"] == 1) & (m["condition"] == "none"), "seg_val_miou"] = 39.5  # rebuilt elsewhere
    m.loc[(m["seed"] == 0) & (m["condition"] == "none"), "ctx_m_cv"] = 0.3
    diffs = shared_round_differences(m, columns)
    assert diffs[["seed", "measure"]].values.tolist() == [[0, "ctx_m_cv"], [1, "seg_val_miou"]]
    assert diffs["values"].iloc[1] == "conta: 41; placebo: 41; none: 39.5"
    md = shared_round_markdown(m, columns)
    assert "0 of 2 units" in md and "| 7 | 1 | seg_val_miou | conta: 41; placebo: 41; none: 39.5 |" in md
    one = m[m["condition"] == "conta"]  # a descriptive study: one condition per unit, nothing to say
    assert shared_round_differences(one, columns).empty and shared_round_markdown(one, columns) == ""


def test_provenance_lists_commits_and_machines_with_their_runs():
    from conta_core.evaluation.study_analysis import provenance_markdown

    m = _measures()
    assert provenance_markdown(m) == ""  # files written before the columns existed
    m["commit"] = np.where(m["seed"] == 0, "98b1389", None)
    m["machine"] = "x86_64 cpu"
    m = pd.concat([m, m.assign(round=2)])  # two rows per run: runs are counted once
    md = provenance_markdown(m)
    assert "- commit: 98b1389 (4); not recorded (8)" in md and "- machine: x86_64 cpu (12)" in md


def test_a_study_without_pairs_gets_an_empty_table_and_a_figure_that_says_so(tmp_path):
    """pairs: [] (a descriptive study, e.g. studies/default_seeds): the same columns, no rows;
    its result is the conditions table."""
    from conta_core.evaluation.study_analysis import ANALYSIS_COLUMNS
    from conta_core.report.plots import plot_study_differences

    m = _measures()
    empty = analyze(m, [], [{"column": "seg_val_miou"}], 2, POWER)
    assert empty.empty and list(empty.columns) == ANALYSIS_COLUMNS
    assert list(analyze(m, [("conta", "placebo")], [{"column": "seg_val_miou"}], 2, POWER).columns) == ANALYSIS_COLUMNS
    assert len(markdown_table(empty).splitlines()) == 2  # header only
    assert plot_study_differences(empty, tmp_path / "d.png").stat().st_size > 0


def test_study_answer_tool_prints_one_table_per_primary_pair_stage_by_stage(tmp_path, capsys):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import study_answer

    specs = [{"column": "seg_val_miou", "role": "primary"}, {"column": "cf_pair", "relative": True}]
    m = _measures().rename(columns={"cf_pair": "cf_pseudo_mask_pair"})
    specs[1]["column"] = "cf_pseudo_mask_pair"
    df = analyze(m, [("conta", "placebo")], specs, 1, POWER)
    (tmp_path / "analysis").mkdir()
    df.to_csv(tmp_path / "analysis" / "pairs.csv", index=False)
    assert study_answer.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("**conta − placebo, round 1**")
    row = df[df["measure"] == "seg_val_miou"].iloc[0]
    assert f"| segmentation | val mIoU | {row['mean_reference']:.2f} | {row['diff']:+.2f} [" in out
    # the mean per replicate beside the pooled one (the design), and the detectable effect
    assert f"| 0: +1.50, 1: +1.50 | {row['detectable']:.2f} | 6 | improves; effect ruled out |" in out
    cf = df[df["measure"] == "cf_pseudo_mask_pair"].iloc[0]
    assert f"| pseudo-mask | pair confusion | {cf['mean_reference']:.3g} | {100 * cf['rel_diff']:+.1f} % [" in out
    per_rep = 100 * -0.1 * 1.5 / 0.5  # conta lowers cf_pair by 0.1 x its shift, 1.5 on average in both
    assert f"| 0: {per_rep:+.1f} %, 1: {per_rep:+.1f} % | {100 * cf['detectable'] / 0.5:.1f} % |" in out
    assert study_answer.main([str(tmp_path), "--pair", "conta,none"]) == 1
    assert "no pair conta - none" in capsys.readouterr().err
    assert study_answer.main([str(tmp_path / "nothing")]) == 2


def test_study_answer_summary_puts_condition_means_beside_every_pair(tmp_path, capsys):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import study_answer

    specs = [{"column": "seg_val_miou", "role": "primary"}, {"column": "cf_pseudo_mask_pair", "relative": True}]
    m = _measures().rename(columns={"cf_pair": "cf_pseudo_mask_pair"})
    none = m[m["condition"] == "placebo"].assign(condition="none", run=lambda d: "none" + d["run"].str[7:])
    none["seg_val_miou"] -= 0.5 + 0.2 * none["seed"]
    m = pd.concat([m, none], ignore_index=True)
    df = analyze(m, [("conta", "placebo"), ("conta", "none")], specs, 1, POWER)
    (tmp_path / "analysis").mkdir()
    df.to_csv(tmp_path / "analysis" / "pairs.csv", index=False)
    args = [str(tmp_path), "--summary", "--pair", "conta,placebo", "--pair", "conta,none"]
    assert study_answer.main(args + ["--conditions", "none,placebo,conta"]) == 0
    out = capsys.readouterr().out
    assert "| stage | measure | none | placebo | conta | conta − placebo | conta − none |" in out
    seg = df[df["measure"] == "seg_val_miou"].set_index("reference")
    means = [
        seg.loc["none", "mean_reference"],
        seg.loc["placebo", "mean_reference"],
        seg.loc["placebo", "mean_treatment"],
    ]
    cells = " | ".join(f"{v:.2f}" for v in means)
    p = seg.loc["placebo"]
    assert f"| segmentation | val mIoU | {cells} | {p['diff']:+.2f} [{p['ci_lo']:+.2f}, {p['ci_hi']:+.2f}] |" in out
    # the primary measure first, the other one marked secondary
    assert out.index("| segmentation | val mIoU") < out.index("| pseudo-mask (secondary) | pair confusion")
    assert study_answer.main(args + ["--conditions", "none,sham"]) == 1
    assert "no condition sham" in capsys.readouterr().err
