"""conta_core.evaluation.metrics against hand-computed confusions (VOC / chainercv semantics)."""

import numpy as np
import pytest

from conta_core.evaluation.metrics import (
    ConfusionAccumulator,
    class_table,
    confusion_matrix,
    iou_per_class,
    mean_iou,
    precision_recall,
)

# 2x3 image, 3 classes. Pixels (gt, pred): (0,0) (0,1) (1,1) / (1,1) (2,255->0) (255 ignored)
GT = np.array([[0, 0, 1], [1, 2, 255]], dtype=np.uint8)
PRED = np.array([[0, 1, 1], [1, 255, 2]], dtype=np.uint8)
CONF = np.array([[1, 1, 0], [0, 2, 0], [1, 0, 0]])


def test_confusion_hand_computed():
    conf = confusion_matrix(PRED, GT, 3)
    assert conf.dtype == np.int64
    np.testing.assert_array_equal(conf, CONF)


def test_iou_precision_recall_hand_computed():
    # class 0: TP 1, GT 2, pred 2 -> 1/3; class 1: TP 2, GT 2, pred 3 -> 2/3; class 2: 0/1
    np.testing.assert_allclose(iou_per_class(CONF), [1 / 3, 2 / 3, 0.0])
    assert mean_iou(CONF) == pytest.approx(1 / 3)  # background included in the mean
    precision, recall = precision_recall(CONF)
    np.testing.assert_allclose(precision, [1 / 2, 2 / 3, np.nan])
    np.testing.assert_allclose(recall, [1 / 2, 1.0, 0.0])


def test_absent_class_is_nan_and_excluded_from_mean():
    gt = np.array([[0, 1], [1, 1]])
    pred = np.array([[0, 1], [1, 0]])
    conf = confusion_matrix(pred, gt, 4)  # classes 2 and 3 appear nowhere
    iou = iou_per_class(conf)
    np.testing.assert_allclose(iou[:2], [1 / 2, 2 / 3])
    assert np.isnan(iou[2]) and np.isnan(iou[3])
    assert mean_iou(conf) == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_predicted_only_class_counts_as_zero():
    conf = confusion_matrix(np.array([[0, 2]]), np.array([[0, 0]]), 3)
    iou = iou_per_class(conf)
    assert iou[2] == 0.0 and np.isnan(iou[1])
    assert mean_iou(conf) == pytest.approx((1 / 2 + 0.0) / 2)


def test_all_ignored_gives_nan():
    conf = confusion_matrix(np.zeros((2, 2)), np.full((2, 2), 255), 3)
    assert conf.sum() == 0
    assert np.isnan(mean_iou(conf))


@pytest.mark.parametrize(
    "pred, gt",
    [
        (np.zeros((2, 2)), np.array([[0, 3], [0, 0]])),  # gt out of range
        (np.array([[0, 7], [0, 0]]), np.zeros((2, 2))),  # pred out of range
        (np.array([[0, -1], [0, 0]]), np.zeros((2, 2))),  # negative pred
        (np.zeros((2, 3)), np.zeros((2, 2))),  # shape mismatch
    ],
)
def test_bad_input_raises(pred, gt):
    with pytest.raises(ValueError):
        confusion_matrix(pred, gt, 3)


def test_accumulator_sums_images():
    acc = ConfusionAccumulator(3)
    acc.add(PRED, GT)
    acc.add(GT, GT)  # perfect image: 5 valid pixels on the diagonal
    expected = CONF + np.diag([2, 2, 1])
    np.testing.assert_array_equal(acc.matrix, expected)
    assert acc.num_images == 2


def test_class_table():
    table = class_table(CONF, ["background", "a", "b"])
    assert list(table.columns) == ["class", "iou", "precision", "recall", "gt_pixels", "pred_pixels"]
    assert table["gt_pixels"].tolist() == [2, 2, 1]
    assert table["pred_pixels"].tolist() == [2, 3, 0]
    assert table.loc[1, "iou"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        class_table(CONF, ["background", "a"])
