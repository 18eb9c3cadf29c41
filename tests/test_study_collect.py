"""tools/study_collect.py: a study's new measures files from its clone, checked, never overwriting."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from conftest import REPO
from conftest import git as _git

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import study_collect  # noqa: E402

HEADER = "run,condition,seed,replicate,round,seg_val_miou\n"
SHEET = "run\tcondition\tseed\treplicate\toverlay\nconta_s0\tconta\t0\t5\t\nplacebo_s0\tplacebo\t0\t5\t\n"


def _tree(root: Path, measures: dict[str, str], pin: str = "") -> Path:
    study = root / "studies" / "demo"
    (study / "measures").mkdir(parents=True)
    (study / "study.yaml").write_text(
        f"name: demo\nbase: {REPO / '.test/config.yaml'}\nsheet: runs.tsv\nrounds: 1\npairs: [[conta, placebo]]\n"
        f"measures: [{{column: seg_val_miou}}]\n{pin}"
    )
    (study / "runs.tsv").write_text(SHEET)
    for run, text in measures.items():
        (study / "measures" / f"{run}.csv").write_text(text)
    return root


GOOD = HEADER + "conta_s0,conta,0,5,0,40.0\nconta_s0,conta,0,5,1,41.0\n"


def test_new_files_are_brought_in_once_and_counted(tmp_path, monkeypatch, capsys):
    clone = _tree(tmp_path / "clone", {"conta_s0": GOOD})
    main = _tree(tmp_path / "main", {})
    monkeypatch.chdir(main)
    assert study_collect.main([str(clone), "studies/demo"]) == 0
    assert (main / "studies/demo/measures/conta_s0.csv").read_text() == GOOD
    out = capsys.readouterr().out
    assert "studies/demo/measures/conta_s0.csv: brought in" in out and "1 run(s) of the sheet without" in out
    assert study_collect.main([str(clone), "studies/demo"]) == 0  # nothing new
    assert "brought in" not in capsys.readouterr().out
    assert not list((main / "studies/demo/measures").glob(".*"))  # no temporary file left


@pytest.mark.parametrize(
    "name, text, match",
    [
        (
            "conta_s0",
            HEADER + "conta_s0,conta,0,6,0,40.0\n",
            "line 2 is run conta_s0, condition conta, seed 0, replicate 6",
        ),
        ("conta_s0", "run,seed\nconta_s0,0\n", "expected a header starting run,condition"),
        ("conta_s0", HEADER, "at least one row"),
        ("conta_s0", HEADER + "conta_s0,conta,0,5,0\n", "line 2 has 5 fields, the header 6"),
        ("none_s0", HEADER + "none_s0,none,0,5,0,40.0\n", "run none_s0 is not in the study's sheet"),
        ("conta_s0", HEADER + "conta_s0,conta,0,5,0,40.0\n", "rounds [0]; a finished run has rounds [0, 1]"),
        ("conta_s0", HEADER + "conta_s0,conta,x,5,0,40.0\n", "line 2: seed, replicate and round must be integers"),
    ],
    ids=["wrong-replicate", "bad-header", "no-rows", "short-row", "not-in-sheet", "unfinished", "bad-seed"],
)
def test_a_bad_file_stops_the_tool_naming_it_and_is_not_brought_in(tmp_path, monkeypatch, capsys, name, text, match):
    clone = _tree(tmp_path / "clone", {name: text})
    main = _tree(tmp_path / "main", {})
    monkeypatch.chdir(main)
    assert study_collect.main([str(clone), "studies/demo"]) == 1
    err = capsys.readouterr().err
    assert f"studies/demo/measures/{name}.csv" in err and match in err
    assert not (main / f"studies/demo/measures/{name}.csv").exists()


def test_a_file_that_differs_is_kept_and_reported(tmp_path, monkeypatch, capsys):
    clone = _tree(tmp_path / "clone", {"conta_s0": GOOD})
    main = _tree(tmp_path / "main", {"conta_s0": GOOD.replace("41.0", "42.0")})
    monkeypatch.chdir(main)
    assert study_collect.main([str(clone), "studies/demo"]) == 1
    assert "differs from" in capsys.readouterr().err
    assert "42.0" in (main / "studies/demo/measures/conta_s0.csv").read_text()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_commit_commits_each_new_file_alone_and_watch_ends_when_all_are_here(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    for k in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{k}_NAME", "t")
        monkeypatch.setenv(f"GIT_{k}_EMAIL", "t@t")
    placebo = GOOD.replace("conta", "placebo")
    clone = _tree(tmp_path / "clone", {"conta_s0": GOOD, "placebo_s0": placebo})
    main = _tree(tmp_path / "main", {})
    _git(main, "init", "-q")
    (main / "other.txt").write_text("staged, not to be committed\n")
    _git(main, "add", "-A")
    _git(main, "commit", "-q", "-m", "start", "--", "studies")
    monkeypatch.chdir(main)
    assert study_collect.main([str(clone), "studies/demo", "--commit", "--watch", "0.01"]) == 0  # all here: ends
    log = _git(main, "log", "--format=%s", "--name-only").split("\n")
    assert "Study demo: measures of placebo_s0" in log and "Study demo: measures of conta_s0" in log
    assert "studies/demo/measures/conta_s0.csv" in log and "other.txt" not in log
    assert "A  other.txt" in _git(main, "status", "--porcelain")


def test_hidden_files_are_skipped_a_bom_is_read_and_a_wrong_clone_is_named(tmp_path, monkeypatch, capsys):
    clone = _tree(tmp_path / "clone", {"conta_s0": "\ufeff" + GOOD.replace("\n", "\r\n"), ".conta_s0.ab12.tmp": "half"})
    main = _tree(tmp_path / "main", {})
    monkeypatch.chdir(main)
    assert study_collect.main([str(clone), "studies/demo"]) == 0
    assert (main / "studies/demo/measures/conta_s0.csv").exists()
    assert not (main / "studies/demo/measures/.conta_s0.ab12.tmp.csv").exists()
    assert study_collect.main([str(tmp_path / "elsewhere"), "studies/demo"]) == 1
    assert "elsewhere/studies/demo/study.yaml does not exist" in capsys.readouterr().err


def test_a_pinned_study_takes_files_only_from_its_commit(tmp_path, monkeypatch, capsys):
    pinned = GOOD.replace("seg_val_miou\n", "seg_val_miou,commit\n").replace(",40.0\n", ",40.0,abc1234ffff\n")
    pinned = pinned.replace(",41.0\n", ",41.0,abc1234ffff\n")
    main = _tree(tmp_path / "main", {}, pin="commit: abc1234\n")
    clone = _tree(tmp_path / "clone", {"conta_s0": pinned}, pin="commit: abc1234\n")
    monkeypatch.chdir(main)
    assert study_collect.main([str(clone), "studies/demo"]) == 1  # the clone is no git checkout
    assert "is not a git checkout" in capsys.readouterr().err
    monkeypatch.setattr(study_collect, "git", lambda repo, *a: "abc1234ffff00\n")  # the clone at the pin
    assert study_collect.main([str(clone), "studies/demo"]) == 0
    (main / "studies/demo/measures/conta_s0.csv").unlink()
    (clone / "studies/demo/measures/conta_s0.csv").write_text(pinned.replace("abc1234ffff", "abc1234ffff+changes"))
    assert study_collect.main([str(clone), "studies/demo"]) == 1
    assert "comes from commit abc1234ffff+changes; the study pins abc1234" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_a_file_whose_commit_failed_is_committed_on_the_next_pass(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    for k in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{k}_NAME", "t")
        monkeypatch.setenv(f"GIT_{k}_EMAIL", "t@t")
    clone = _tree(tmp_path / "clone", {"conta_s0": GOOD})
    main = _tree(tmp_path / "main", {})
    _git(main, "init", "-q")
    _git(main, "add", "-A")
    _git(main, "commit", "-q", "-m", "start")
    monkeypatch.chdir(main)
    (main / ".git/index.lock").write_text("")  # another git process holds the index
    assert study_collect.main([str(clone), "studies/demo", "--commit"]) == 1
    assert "index.lock" in capsys.readouterr().err
    assert (main / "studies/demo/measures/conta_s0.csv").exists()  # brought in, not committed
    (main / ".git/index.lock").unlink()
    assert study_collect.main([str(clone), "studies/demo", "--commit"]) == 0
    assert "conta_s0.csv: committed" in capsys.readouterr().out
    assert "Study demo: measures of conta_s0" in _git(main, "log", "--format=%s")
