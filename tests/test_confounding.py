"""conta_core.evaluation.confounding on hand-made label maps with known answers."""

import numpy as np
import pytest

from conta_core.data.synthetic import (
    SynthConfig,
    _split_seed,
    generate_synthetic,
    part_mask_of,
    render_scene,
    sample_scene,
)
from conta_core.evaluation.confounding import (
    ConfoundingAccumulator,
    boundary,
    fill_void,
    interior,
    lift_pairs,
    measure_split,
    stage_measures,
)
from conta_core.infra.fileio import load_label_png, save_label_png


def test_pair_confusion_and_leaks_known_answer():
    # classes: 0 bg, 1 horse, 2 person. GT: left half person (cols 0-3), right half horse (4-7) in 8x8.
    gt = np.zeros((8, 8), np.uint8)
    gt[:, :4] = 2
    gt[:, 4:] = 1
    gt[0, :] = 0  # first row background
    pred = gt.copy()
    pred[1:3, :4] = 1  # 8 person pixels labelled horse
    pred[0, 4:] = 1  # 4 background pixels labelled horse
    acc = ConfoundingAccumulator(3, pairs=[(1, 2)], textures={1: "grass"})
    acc.add(pred, gt, texture="grass")
    r = acc.result(["background", "horse", "person"])
    tp_horse = 7 * 4  # rows 1-7 of cols 4-7
    assert r["pair_confusion"]["person->horse"] == pytest.approx(8 / tp_horse)
    assert r["pair_confusion"]["horse->person"] == 0.0
    assert r["pair_confusion_mean"] == pytest.approx(4 / tp_horse)
    assert r["pair_confusion_undefined"] == 0
    pred_horse = tp_horse + 8 + 4
    assert r["bg_leak"]["horse"] == pytest.approx(4 / pred_horse)
    assert r["texture_leak"]["horse"] == pytest.approx(4 / pred_horse)
    assert r["bg_leak_context"] == pytest.approx(4 / pred_horse)  # context classes: horse only
    assert r["bg_leak"]["person"] == 0.0


def test_pair_confusion_with_no_true_positive_is_counted_not_dropped():
    # horse (1) is never found but 8 person (2) pixels are labelled horse: m(person->horse)
    # = 8 / 0 is undefined, left out of the mean and counted; horse->person stays 0.
    gt = np.zeros((4, 4), np.uint8)
    gt[:, :2], gt[:, 2:] = 2, 1
    pred = gt.copy()
    pred[:, 2:] = 0  # every horse pixel missed
    pred[:, :2] = 1  # every person pixel labelled horse
    acc = ConfoundingAccumulator(3, pairs=[(1, 2)])
    acc.add(pred, gt)
    r = acc.result(["background", "horse", "person"])
    assert r["pair_confusion"]["person->horse"] is None
    assert r["pair_confusion_undefined"] == 1
    assert r["pair_confusion_undefined_pairs"] == ["person->horse"]
    assert r["pair_confusion"]["horse->person"] is None  # TP(person) = 0 too, but no FP: 0/0, not counted
    assert r["pair_confusion_mean"] is None


def test_texture_leak_only_on_the_confounding_texture():
    gt = np.zeros((6, 6), np.uint8)
    gt[2:4, 2:4] = 1
    pred = gt.copy()
    pred[0, :] = 1
    acc = ConfoundingAccumulator(2, pairs=[], textures={1: "water"})
    acc.add(pred, gt, texture="sand")
    r = acc.result()
    assert r["bg_leak"]["1"] == pytest.approx(6 / 10)
    assert r["texture_leak"]["1"] == 0.0


def test_interior_and_part_miss():
    gt = np.zeros((12, 12), np.uint8)
    gt[2:10, 2:10] = 1  # 8x8 object; interior at band 2 = pixels >2 px from the edge pixels
    inner = interior(gt, 2)
    assert inner.sum() == 2 * 2  # rows/cols 5..6 only: the boundary ring is 1 px wide on each side
    pred = gt.copy()
    pred[5:7, 5:7] = 0  # the whole interior missed (a hole, as a car's windows)
    part = np.zeros_like(gt, bool)
    part[4:6, 4:8] = True
    acc = ConfoundingAccumulator(2, pairs=[])
    acc.add(pred, gt, part_mask=part)
    r = acc.result()
    assert r["interior_miss"]["1"] == 1.0
    assert r["part_miss"]["1"] == pytest.approx(2 / 8)  # part rows 4-5 x cols 4-7; the hole holds (5, 5), (5, 6)
    assert r["part_miss_mean"] == r["part_miss"]["1"]


def test_boundary_f_perfect_shifted_and_void():
    gt = np.zeros((20, 20), np.uint8)
    gt[5:15, 5:15] = 1
    acc = ConfoundingAccumulator(2, pairs=[], band=2)
    acc.add(gt, gt)
    assert acc.result()["boundary_f"] == 1.0
    shifted = np.zeros_like(gt)
    shifted[5:15, 10:20] = 1  # 5 px off: far outside a 2 px band on the vertical edges
    acc = ConfoundingAccumulator(2, pairs=[], band=2)
    acc.add(shifted, gt)
    assert 0.0 < acc.result()["boundary_f"] < 0.8
    voided = gt.copy()
    voided[boundary(gt) & (gt == 0)] = 255  # VOC-style void band outside the object
    acc = ConfoundingAccumulator(2, pairs=[], band=2)
    acc.add(gt, voided)
    assert acc.result()["boundary_f"] == 1.0


def test_fill_void_takes_nearest_label():
    gt = np.array([[1, 255, 255, 0]], np.uint8)
    assert fill_void(gt).tolist() == [[1, 1, 0, 0]]


def test_empty_denominators_are_nan():
    acc = ConfoundingAccumulator(3, pairs=[(1, 2)])
    acc.add(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8))
    r = acc.result()
    assert r["pair_confusion_mean"] is None  # JSON null
    assert r["bg_leak"]["1"] is None
    assert r["boundary_f"] is None  # neither map has a boundary
    acc.add(np.zeros((4, 4), np.uint8), np.eye(4, dtype=np.uint8))
    assert acc.result()["boundary_f"] == 0.0  # GT boundary, none predicted


def test_lift_pairs_ranks_by_lift_and_min_count():
    labels = {f"a{i}": [1, 2] for i in range(5)}  # 1 and 2 always together
    labels.update({f"b{i}": [3] for i in range(10)})
    labels.update({f"c{i}": [3, 4] for i in range(5)})
    labels.update({f"d{i}": [4] for i in range(5)})
    assert lift_pairs(labels, top=2, min_count=5) == [(1, 2), (3, 4)]
    assert lift_pairs(labels, top=5, min_count=6) == []


def test_part_mask_rerenders_the_generator(tmp_path):
    cfg = {
        "num_train": 6,
        "num_val": 2,
        "image_size": 48,
        "seed": 3,
        "min_objects": 1,
        "max_objects": 3,
        "min_object_frac": 0.3,
        "max_object_frac": 0.5,
        "min_visible_frac": 0.5,
        "void_width": 1,
        "jpeg_quality": 95,
        "cooccurrence": 0.9,
        "background_context": 0.9,
        "part_context": 1.0,
        "control": False,
        "cooccurrence_pairs": [["horse", "person"], ["car", "tyre"]],
        "context_textures": {"boat": "water"},
        "part_classes": ["car"],
    }
    m = generate_synthetic(tmp_path, cfg)
    for image_id in m.ids("train"):
        sc = SynthConfig.from_dict(cfg)
        index = int(image_id.split("_")[1])
        expected = render_scene(sample_scene(_split_seed(3, "train", index), sc), sc).part_mask
        assert (part_mask_of(m, image_id) == expected).all()
    with pytest.raises(ValueError, match="not a generated id"):
        part_mask_of(m, "weird")
    # the measures over perfect predictions (GT with the void filled): no confusion, no leak, boundary F 1
    r = measure_split(m, m.ids("train"), ((i, fill_void(load_label_png(m.mask_file(i)))) for i in m.ids("train")))
    assert r["pair_confusion_mean"] in (0.0, None)
    assert all(v in (0.0, None) for v in r["bg_leak"].values())
    assert r["boundary_f"] == 1.0


def test_stage_measures_names_missing_ids(tmp_path):
    cfg = {
        "num_train": 3,
        "num_val": 1,
        "image_size": 32,
        "seed": 0,
        "min_objects": 1,
        "max_objects": 2,
        "min_object_frac": 0.3,
        "max_object_frac": 0.5,
        "min_visible_frac": 0.5,
        "void_width": 1,
        "jpeg_quality": 95,
        "cooccurrence": 0.5,
        "background_context": 0.5,
        "part_context": 0.5,
        "control": False,
        "cooccurrence_pairs": [["horse", "person"]],
        "context_textures": {},
        "part_classes": [],
    }
    m = generate_synthetic(tmp_path / "data", cfg)
    d = tmp_path / "pred" / "0"
    d.mkdir(parents=True)
    first = m.ids("train")[0]
    save_label_png(d / f"{first}.png", np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError, match="2 of 3 image ids missing"):
        stage_measures(m, "train_eval", "pseudo_mask", [d], {})
    with pytest.raises(ValueError, match="stage 'x'"):
        stage_measures(m, "train_eval", "x", [d], {})
