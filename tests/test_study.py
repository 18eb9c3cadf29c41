"""Study sheets (conta_core.infra.study): loading, the merged run configs, the shared base per
(replicate, seed), and errors that name the row before any job."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import git as _git

from conta_core.infra.config import DEFAULT_CONFIG, ConfigError, load_yaml
from conta_core.infra.study import StudyError, load_study, measures_table

REPO = Path(__file__).resolve().parent.parent
HEADER = "run\tcondition\tseed\treplicate\toverlay\n"
GOOD = [
    "conta_s0\tconta\t0\t0\t{context: {mode: conta}}",
    "placebo_s0\tplacebo\t0\t0\t{context: {mode: placebo}}",
    "conta_s1\tconta\t1\t3\t{context: {mode: conta}}",
    "placebo_s1\tplacebo\t1\t3\tplacebo.yaml",
]


def make_study(tmp_path: Path, rows: list[str], **extra) -> Path:
    folder = tmp_path / "studies" / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "placebo.yaml").write_text("context: {mode: placebo}\n")
    (folder / "runs.tsv").write_text(HEADER + "\n".join(rows) + "\n")
    study = {
        "name": "demo",
        "base": str(REPO / ".test/config.yaml"),
        "sheet": "runs.tsv",
        "rounds": 2,
        "pairs": [["conta", "placebo"]],
        "measures": [{"column": "seg_val_miou", "role": "primary"}],
        **extra,
    }
    import yaml

    (folder / "study.yaml").write_text(yaml.safe_dump(study))
    return folder / "study.yaml"


def load(path: Path):
    return load_study(path, load_yaml(DEFAULT_CONFIG))


def test_runs_get_merged_configs_and_one_base_per_replicate_and_seed(tmp_path):
    study = load(make_study(tmp_path, GOOD))
    assert [r.name for r in study.runs] == ["conta_s0", "placebo_s0", "conta_s1", "placebo_s1"]
    r = study.runs[3]
    cfg = r.config
    assert (cfg["run"], cfg["seed"], cfg["rounds"], cfg["results_dir"]) == ("placebo_s1", 1, 2, "results/demo")
    assert cfg["dataset"]["synthetic"]["seed"] == 3  # replicate = the generator seed
    assert cfg["context"]["mode"] == "placebo"  # from the overlay file
    assert cfg["shards"] == 2  # from the base (.test/config.yaml)
    assert cfg["shared_prefix"] == "results/demo/base_r3_s1"
    assert sorted(study.bases) == ["base_r0_s0", "base_r3_s1"]
    assert study.bases["base_r3_s1"]["rounds"] == 0
    assert study.pending_bases().keys() == study.bases.keys()


def test_a_base_may_be_a_list_of_overlays_merged_in_order(tmp_path):
    """Study 4 (SEAM) stacks the SEAM overlay on study 2's testbed file; the stack reaches the
    base runs too (round 0 must be SEAM's)."""
    (tmp_path / "seam.yaml").write_text("method: seam\nshards: 3\n")
    path = make_study(
        tmp_path, GOOD, base=[str(REPO / ".test/config.yaml"), str(tmp_path / "seam.yaml"), {"shards": 4}]
    )
    study = load(path)
    for cfg in [r.config for r in study.runs] + list(study.bases.values()):
        assert cfg["method"] == "seam" and cfg["shards"] == 4  # the later overlay wins
        assert cfg["pretrain"] == load(make_study(tmp_path, GOOD)).runs[0].config["pretrain"]  # the first still applies
    with pytest.raises(ConfigError, match="base: .*missing.yaml does not exist"):
        load(make_study(tmp_path, GOOD, base=[str(tmp_path / "missing.yaml")]))
    with pytest.raises(StudyError, match="base"):
        load(make_study(tmp_path, GOOD, base=[]))  # an empty list: say null instead


def test_finished_runs_and_their_bases_are_not_pending(tmp_path):
    path = make_study(tmp_path, GOOD)
    study = load(path)
    for name in ("conta_s0", "placebo_s0"):
        Path(study.measures_file(name)).parent.mkdir(parents=True, exist_ok=True)
        Path(study.measures_file(name)).write_text("run\n")
    assert [r.name for r in study.pending_runs()] == ["conta_s1", "placebo_s1"]
    assert list(study.pending_bases()) == ["base_r3_s1"]


@pytest.mark.parametrize(
    "rows, match",
    [
        (
            GOOD[:3] + ["placebo_s1\tplacebo\t1\t3\t{context: {mode: placebo, colour: red}}"],
            r"row 4 \(run placebo_s1\): invalid config:.*context.*colour",
        ),
        (GOOD[:3] + ["conta_s0\tplacebo\t1\t3\t"], r"row 4 \(run conta_s0\): duplicate run name \(first in row 1\)"),
        (GOOD[:3], r"row 3 \(run conta_s1\): condition conta has no partner placebo for replicate 3, seed 1"),
        (GOOD[:3] + ["placebo_s1\tplacebo\tone\t3\t"], r"row 4 \(run placebo_s1\): seed 'one' is not an integer"),
        (GOOD[:3] + ["placebo_s1\tplacebo\t1\t-2\t"], r"row 4 \(run placebo_s1\): replicate -2 is negative"),
        (GOOD[:3] + ["placebo_s1\tplacebo\t1\t3\t{seed: 4}"], r"row 4 \(run placebo_s1\): overlay sets seed"),
        (
            GOOD[:3] + ["placebo_s1\tplacebo\t1\t3\t{classifier: {epochs: 3}}"],
            r"row 4 \(run placebo_s1\): overlay changes classifier.epochs, which round 0 uses",
        ),
        (GOOD[:3] + ["placebo-s1\tplacebo\t1\t3\t"], r"row 4 \(run placebo-s1\): run name"),
    ],
    ids=[
        "unknown-overlay-key",
        "duplicate-run",
        "missing-partner",
        "bad-seed",
        "bad-replicate",
        "fixed-key",
        "round0-key",
        "bad-name",
    ],
)
def test_bad_sheets_fail_naming_the_row(tmp_path, rows, match):
    with pytest.raises(StudyError, match=r"(?s)^study demo " + match):
        load(make_study(tmp_path, rows))


def test_bad_study_file_fails_naming_the_key(tmp_path):
    with pytest.raises(StudyError, match="pairs"):
        load(make_study(tmp_path, GOOD, pairs=[["conta"]]))
    with pytest.raises(StudyError, match="pairs: condition none has no run"):
        load(make_study(tmp_path, GOOD, pairs=[["conta", "none"]]))


def test_primary_pairs_must_be_pairs_and_decision_is_one_of_the_rules(tmp_path):
    study = load(make_study(tmp_path, GOOD, primary_pairs=[["conta", "placebo"]], decision="difference"))
    assert study.primary_pairs == [("conta", "placebo")] and study.decision == "difference"
    assert load(make_study(tmp_path, GOOD)).primary_pairs is None
    with pytest.raises(StudyError, match=r"primary_pairs: \[\['placebo', 'conta'\]\] not in pairs"):
        load(make_study(tmp_path, GOOD, primary_pairs=[["placebo", "conta"]]))
    with pytest.raises(StudyError, match="decision"):
        load(make_study(tmp_path, GOOD, decision="one-sided"))


def test_a_descriptive_study_has_no_pairs_and_needs_no_partners(tmp_path):
    study = load(make_study(tmp_path, GOOD[:1] + GOOD[2:3], pairs=[]))
    assert study.pairs == [] and [r.name for r in study.runs] == ["conta_s0", "conta_s1"]


def test_order_sets_priorities_unit_by_unit_then_unlisted_conditions(tmp_path):
    study = load(make_study(tmp_path, GOOD, order=["placebo", "conta"]))
    # units in sheet order: (0, 0) then (3, 1); within a unit its base, placebo, conta
    assert study.priority("base_r0_s0") == study.priority("placebo_s0") == 4
    assert [study.priority(r.name) for r in study.runs] == [3, 4, 1, 2]
    assert study.priority("base_r3_s1") == 2
    only = load(make_study(tmp_path, GOOD, order=["placebo"]))
    # conta after every placebo, and then unit by unit too (a `none` run's rounds are independent:
    # with one priority for all, Snakemake interleaved every unlisted run and finished none early)
    assert [only.priority(r.name) for r in only.runs] == [2, 4, 1, 3]
    # no order: every condition unlisted, unit by unit in sheet order
    assert [load(make_study(tmp_path, GOOD)).priority(r.name) for r in only.runs] == [4, 3, 2, 1]
    with pytest.raises(StudyError, match="order: condition none has no run"):
        load(make_study(tmp_path, GOOD, order=["conta", "none"]))
    with pytest.raises(StudyError, match="names a condition twice"):
        load(make_study(tmp_path, GOOD, order=["conta", "conta"]))


def test_order_tiers_run_every_unit_of_a_tier_before_the_next_tier(tmp_path):
    tiers = load(make_study(tmp_path, GOOD, order=[["placebo"], ["conta"]]))
    # tier 1 (placebo): 2 units -> priorities 2 + (2, 1); tier 2 (conta): (2, 1); bases at their unit's top
    assert [tiers.priority(r.name) for r in tiers.runs] == [2, 4, 1, 3]
    assert tiers.priority("base_r0_s0") == 4 and tiers.priority("base_r3_s1") == 3
    flat = load(make_study(tmp_path, GOOD, order=["placebo", "conta"]))
    one_tier = load(make_study(tmp_path, GOOD, order=[["placebo", "conta"]]))
    assert [flat.priority(r.name) for r in flat.runs] == [one_tier.priority(r.name) for r in one_tier.runs]
    # a unit whose listed runs are finished (a continuation on a fresh machine): its base waits
    # with the unit's pending runs instead of going first
    only = load(make_study(tmp_path, GOOD, order=["placebo"]))
    Path(only.measures_file("placebo_s0")).parent.mkdir(parents=True, exist_ok=True)
    Path(only.measures_file("placebo_s0")).write_text("run\n")
    assert only.priority("base_r0_s0") == only.priority("conta_s0") == 2
    assert only.priority("base_r3_s1") == only.priority("placebo_s1") == 3
    with pytest.raises(StudyError, match="mixes conditions and tiers"):
        load(make_study(tmp_path, GOOD, order=["placebo", ["conta"]]))
    with pytest.raises(StudyError, match="names a condition twice"):
        load(make_study(tmp_path, GOOD, order=[["placebo"], ["placebo", "conta"]]))


def test_finished_measures_lists_the_finished_runs_or_says_none_has_finished(tmp_path):
    study = load(make_study(tmp_path, GOOD))
    with pytest.raises(StudyError, match="study demo: no run has finished yet"):
        study.finished_measures()
    Path(study.measures_file("placebo_s1")).parent.mkdir(parents=True)
    Path(study.measures_file("placebo_s1")).write_text("run\n")
    assert study.finished_measures() == [study.measures_file("placebo_s1")]


def test_measures_table_puts_the_run_first_and_its_provenance_last():
    summary = pd.DataFrame({"round": [0, 1], "seg_val_miou": [40.0, 41.0]})
    df = measures_table(summary, "a", "conta", 2, 0)
    assert list(df.columns) == ["run", "condition", "seed", "replicate", "round", "seg_val_miou"]
    assert df["seed"].tolist() == [2, 2]
    df = measures_table(summary, "a", "conta", 2, 0, {"machine": "m", "commit": "abc", "other": 1})
    assert list(df.columns)[-3:] == ["seg_val_miou", "commit", "machine"]
    assert df["commit"].tolist() == ["abc", "abc"]


def test_read_measures_keeps_a_commit_that_looks_like_a_number(tmp_path):
    from conta_core.infra.study import read_measures

    summary = pd.DataFrame({"round": [0], "seg_val_miou": [40.0]})
    for i, commit in enumerate(("012345678901", "1234e5678901")):
        measures_table(summary, f"r{i}", "conta", 0, 0, {"commit": commit, "machine": "1"}).to_csv(
            tmp_path / f"r{i}.csv", index=False
        )
    pd.DataFrame({"run": ["old"], "round": [0], "seg_val_miou": [1.0]}).to_csv(tmp_path / "old.csv", index=False)
    m = read_measures(sorted(tmp_path.glob("*.csv")))
    assert m["commit"].tolist()[1:] == ["012345678901", "1234e5678901"] and m["machine"].tolist()[1:] == ["1", "1"]
    assert m["seg_val_miou"].dtype == float


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_workflow_commit_names_head_and_tracked_changes_and_never_fails(tmp_path, monkeypatch):
    from conta_core.infra.study import workflow_commit

    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    _git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    _git(tmp_path, "add", "code.py")
    _git(tmp_path, "commit", "-q", "-m", "first")
    head = _git(tmp_path, "rev-parse", "HEAD")
    assert workflow_commit(tmp_path) == head[:12]
    (tmp_path / "new.txt").write_text("untracked\n")
    assert workflow_commit(tmp_path) == head[:12]  # untracked files are not the code
    (tmp_path / "code.py").write_text("x = 2\n")
    assert workflow_commit(tmp_path) == head[:12] + "+changes"
    assert workflow_commit(tmp_path / "nowhere") == "unknown"
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert workflow_commit(tmp_path) == "unknown"


def test_the_example_study_loads():
    study = load(REPO / "studies/example/study.yaml")
    assert len(study.runs) == 4 and len(study.bases) == 2


@pytest.mark.parametrize("folder", sorted(p.parent.name for p in (REPO / "studies").glob("*/study.yaml")))
def test_every_committed_study_loads(folder):
    study = load(REPO / "studies" / folder / "study.yaml")
    assert study.runs and study.name


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_a_pinned_study_runs_only_at_its_commit_while_runs_are_left(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "code.py").write_text("x = 1\n")
    _git(repo, "add", "code.py")
    _git(repo, "commit", "-q", "-m", "first")
    first = _git(repo, "rev-parse", "HEAD")
    path = make_study(tmp_path, GOOD, commit=first[:7])
    study = load(path)
    assert study.commit == first[:7]
    study.check_commit(repo)  # at the commit: fine
    (repo / "code.py").write_text("x = 2\n")  # at the commit, with the code changed
    with pytest.raises(StudyError, match=r"has changes to tracked files \(code.py\): commit or stash"):
        study.check_commit(repo)
    _git(repo, "commit", "-q", "-am", "second")
    head = _git(repo, "rev-parse", "HEAD")
    with pytest.raises(StudyError, match=rf"study demo: its runs come from commit {first[:7]} .* 4 are left "
                       rf"\(conta_s0, placebo_s0, conta_s1, \.\.\.\), but this checkout is at {head[:12]}.*"
                       rf"checkout {first[:7]}.*measures/\*\.csv"):  # fmt: skip
        study.check_commit(repo)
    with pytest.raises(StudyError, match="is not a git checkout"):
        study.check_commit(tmp_path / "nowhere")
    (repo / "sub").mkdir()
    with pytest.raises(StudyError, match="lies inside another git checkout"):
        study.check_commit(repo / "sub")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(StudyError, match="git is not installed"):
        study.check_commit(repo)
    for r in study.runs:  # every run measured: the analysis runs at any commit
        Path(study.measures_file(r.name)).parent.mkdir(parents=True, exist_ok=True)
        Path(study.measures_file(r.name)).write_text("run\n")
    study.check_commit(repo)
    study.check_commit(tmp_path / "nowhere")
    load(make_study(tmp_path, GOOD)).check_commit(tmp_path / "nowhere")  # no commit: no check
    with pytest.raises(StudyError, match="commit"):
        load(make_study(tmp_path, GOOD, commit="main"))


def test_machine_label_names_the_libraries_and_the_cpu_fingerprint():
    from conta_core.report.run_digest import machine_fingerprint, machine_label

    f, label = machine_fingerprint(), machine_label()
    assert label.startswith(f["machine"] + " ") and f"torch {f['torch']}" in label
    assert f"{f['cpu_capability']}, flags {f['cpu_flags_sha256']}" in label and "\n" not in label
