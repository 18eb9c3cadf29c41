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
        m.splits, m.labels, m.images, m.masks, m.meta
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
        ({"labels": {"a": [4], "b": [], "c": []}}, "image 'a' has class index 4 outside 1..3"),
        ({"splits": {"train": ["a", "b"], "val": ["b", "c"]}}, r"1 image id\(s\) of split 'train' are also in val/test \(e.g. \['b'\]\)"),
    ],
)
def test_validate_names_the_problem(tmp_path: Path, change: dict, pattern: str) -> None:
    _manifest(tmp_path).validate()
    with pytest.raises(ValueError, match=pattern):
        _manifest(tmp_path, **change).validate()
