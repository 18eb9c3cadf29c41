"""Tests of the dataset Manifest (save/load, paths, label vectors, validation)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conta_core.data.manifest import Manifest


def _manifest(root: Path, **kw) -> Manifest:
    d = dict(
        name="t",
        root=root,
        class_names=["background", "cat", "dog", "cow"],
        splits={"train": ["a", "b"], "train_eval": ["a"], "val": ["c"]},
        labels={"a": [1, 3], "b": [2], "c": []},
        images={"a": "img/a.jpg", "b": "img/b.jpg", "c": "/abs/c.jpg"},
        masks={"a": "m/a.png"},
    )
    d.update(kw)
    return Manifest(**d)


def test_counts_paths_and_label_vector(tmp_path: Path) -> None:
    m = _manifest(tmp_path)
    assert m.num_classes == 4 and m.num_fg == 3
    assert m.image_file("a") == tmp_path / "img/a.jpg" and m.image_file("c") == Path("/abs/c.jpg")
    assert m.mask_file("a") == tmp_path / "m/a.png" and m.mask_file("b") is None
    assert m.label_vector("a").tolist() == [1.0, 0.0, 1.0] and m.label_vector("c").tolist() == [0, 0, 0]
    assert m.ids("train") == ["a", "b"]
    with pytest.raises(KeyError, match="no split 'test'"):
        m.ids("test")


def test_save_load_roundtrip_and_relative_root(tmp_path: Path) -> None:
    m = _manifest(Path("data"), meta={"k": [1, 2]})
    m.save(tmp_path / "manifest.json")
    loaded = Manifest.load(tmp_path / "manifest.json")
    assert loaded.root == (tmp_path / "data").resolve()
    assert (loaded.splits, loaded.labels, loaded.images, loaded.masks, loaded.meta) == (
        m.splits,
        m.labels,
        m.images,
        m.masks,
        m.meta,
    )


def test_load_rejects_bad_files(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="broken.json"):
        Manifest.load(tmp_path / "broken.json")
    d = _manifest(tmp_path).to_dict()
    d["version"] = 99
    (tmp_path / "old.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="old.json: manifest version 99"):
        Manifest.load(tmp_path / "old.json")


@pytest.mark.parametrize(
    "change, pattern",
    [
        ({"class_names": ["cat", "dog"]}, "must start with 'background'"),
        ({"splits": {"train": []}}, "split 'train' is empty"),
        ({"splits": {"train": ["a", "b", "a"]}}, "split 'train' has duplicate image id 'a'"),
        ({"splits": {"train": ["zz"]}}, "image id 'zz' of split 'train' has no image path"),
        ({"labels": {"a": [4], "b": [2], "c": []}}, "image 'a' has class index 4 outside 1..3"),
        (
            {"splits": {"train": ["a", "b"], "val": ["b", "c"]}},
            r"1 image id\(s\) of split 'train' are also in val/test \(e.g. \['b'\]\)",
        ),
    ],
)
def test_validate_names_the_problem(tmp_path: Path, change: dict, pattern: str) -> None:
    _manifest(tmp_path).validate()
    with pytest.raises(ValueError, match=pattern):
        _manifest(tmp_path, **change).validate()


def test_training_image_without_labels_is_rejected_and_prepare_leaves_it_out(tmp_path: Path, caplog) -> None:
    """A train image without a foreground label: validate names it; prepare's
    drop_unlabelled_training removes it from train/train_eval (one counted warning, meta),
    keeps it in val."""
    import logging

    from conta_core.data.prepare import drop_unlabelled_training

    m = _manifest(
        tmp_path,
        splits={"train": ["a", "b", "c"], "train_eval": ["a", "c"], "val": ["c"]},
        labels={"a": [1, 3], "b": [2], "c": []},
        meta={"val_is_train": True},
    )
    with pytest.raises(ValueError, match="image id 'c' of split 'train' has no foreground label"):
        m.validate()
    with caplog.at_level(logging.WARNING, logger="conta.data.prepare"):
        kept = drop_unlabelled_training(m)
    assert kept.splits == {"train": ["a", "b"], "train_eval": ["a"], "val": ["c"]}
    assert kept.meta["train_without_labels"] == 1
    assert [r.getMessage() for r in caplog.records] == [
        "dataset t: 1 training image(s) without a foreground label left out of train/train_eval (e.g. ['c'])"
    ]
    kept.validate()
    assert drop_unlabelled_training(kept) is kept


def test_check_scorable_needs_a_mask_in_every_scored_split(tmp_path: Path) -> None:
    from conta_core.data.prepare import check_scorable

    check_scorable(_manifest(tmp_path, masks={}))  # no GT at all: nothing will be scored
    check_scorable(_manifest(tmp_path, masks={"a": "m/a.png", "c": "m/c.png"}))
    with pytest.raises(ValueError, match="no GT mask for any of the 1 images of split 'val'"):
        check_scorable(_manifest(tmp_path))  # masks for train images only
