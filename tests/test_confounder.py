"""Tests of conta_core.steps.confounder: class-average masks and their HDF5 file."""

import logging

import h5py
import numpy as np
import pytest

from conta_core.infra.fileio import save_label_png
from conta_core.steps.confounder import build_confounder, load_confounder, save_confounder


@pytest.fixture
def masks(tmp_path):
    a = np.zeros((4, 4), np.uint8)
    a[:2, :2] = 1
    b = np.zeros((4, 4), np.uint8)
    b[0, :] = 1
    b[2:, 2:] = 2
    b[3, 0] = 255
    files = {}
    for name, m in (("a", a), ("b", b)):
        files[name] = tmp_path / f"{name}.png"
        save_label_png(files[name], m)
    labels = {"a": [1], "b": [1, 2], "c": []}  # c has no class: no mask needed
    return files, labels


def test_area_average_hand_computed(masks, caplog):
    files, labels = masks
    with caplog.at_level(logging.WARNING):
        C, counts = build_confounder(files, labels, num_fg=3, size=(2, 2))
    assert C.dtype == np.float32 and C.shape == (3, 2, 2)
    # class 1: a -> [[1, 0], [0, 0]], b -> [[.5, .5], [0, 0]] (row 0 covers half of the top cells)
    np.testing.assert_allclose(C[0], [[0.75, 0.25], [0, 0]])
    np.testing.assert_allclose(C[1], [[0, 0], [0, 1]])
    np.testing.assert_array_equal(C[2], 0)  # no image of class 3
    np.testing.assert_array_equal(counts, [2, 1, 0])
    assert "no image" in caplog.text


def test_nearest_resize(masks):
    files, labels = masks
    C, _ = build_confounder(files, labels, num_fg=2, size=(2, 2), resize="nearest")
    np.testing.assert_allclose(C[0], [[0.5, 0], [0, 0]])  # samples pixels (1,1), (1,3), (3,1), (3,3)


def test_missing_mask_names_the_id(masks):
    files, labels = masks
    with pytest.raises(ValueError, match="'b'"):
        build_confounder({"a": files["a"]}, labels, num_fg=2, size=(2, 2))


def test_hdf5_round_trip(tmp_path):
    C = np.arange(12, dtype=np.float32).reshape(3, 2, 2) / 12
    path = tmp_path / "round1" / "confounder.h5"
    save_confounder(path, C, np.array([4, 0, 2]), ["cat", "dog", "boat"], round=1, source="seg")
    C2, attrs = load_confounder(path)
    np.testing.assert_array_equal(C2, C)
    assert attrs["classes"] == ["cat", "dog", "boat"]
    assert attrs["round"] == 1 and attrs["source"] == "seg"
    np.testing.assert_array_equal(attrs["image_counts"], [4, 0, 2])
    with h5py.File(path) as f:
        assert f["C"].dtype == np.float32
    assert [p.name for p in path.parent.iterdir()] == ["confounder.h5"]  # no temp file left


def test_save_rejects_mismatched_names(tmp_path):
    with pytest.raises(ValueError, match="class names"):
        save_confounder(tmp_path / "c.h5", np.zeros((2, 2, 2)), np.zeros(2), ["x"], round=0, source="seg")
