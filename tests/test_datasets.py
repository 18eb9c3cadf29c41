"""Tests of the dataset sources (VOC+SBD, COCO, folder), prepare_dataset validation,
artifact lookup and the torch Dataset classes, on tiny fixtures built here."""

from __future__ import annotations

import importlib.util
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from conta_core.data.artifacts import index_artifacts, require
from conta_core.data.coco import decode_uncompressed_rle, prepare_coco14
from conta_core.data.manifest import Manifest
from conta_core.data.prepare import prepare_dataset
from conta_core.data.torch_datasets import (
    ClassificationDataset,
    SegmentationDataset,
)
from conta_core.data.voc import VOC_CLASSES, prepare_voc12
from conta_core.infra.fileio import load_label_png, save_label_png

torch.set_num_threads(1)
SIZE = 16


def _jpeg(path: Path, seed: int, size: tuple[int, int] = (SIZE, SIZE)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=95)


def _mask(classes: list[int]) -> np.ndarray:
    """uint8[16, 16]: one 4-row band per class, a 255 row between."""
    m = np.zeros((SIZE, SIZE), dtype=np.uint8)
    for j, k in enumerate(classes):
        m[4 * j : 4 * j + 3, 2:10] = k
        m[4 * j + 3, 2:10] = 255
    return m


# --------------------------------------------------------------------------- VOC + SBD

VOC_TRAIN = {"2007_000001": [15], "2007_000002": [13, 15]}
VOC_VAL = {"2007_000003": [4], "2008_000009": [1]}  # 2008_000009 is also in SBD train
SBD_ONLY = {"2008_000010": [7], "2009_000011": [12, 19]}


def _voc_tree(tmp_path: Path, with_sbd: bool) -> tuple[Path, Path | None]:
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    sets = voc / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    for n, (i, ks) in enumerate({**VOC_TRAIN, **VOC_VAL, **SBD_ONLY}.items()):
        _jpeg(voc / "JPEGImages" / f"{i}.jpg", n)
        if i not in SBD_ONLY:
            save_label_png(voc / "SegmentationClass" / f"{i}.png", _mask(ks))
    (sets / "train.txt").write_text("\n".join(VOC_TRAIN) + "\n")
    (sets / "val.txt").write_text("\n".join(VOC_VAL) + "\n")
    if not with_sbd:
        return voc, None
    sbd = tmp_path / "benchmark_RELEASE"
    (sbd / "dataset" / "cls").mkdir(parents=True)
    for i, ks in {**SBD_ONLY, "2008_000009": [1], "2007_000002": [13, 15]}.items():
        seg = _mask(ks)
        seg[seg == 255] = 0  # SBD has no void band
        gt = {"Segmentation": seg, "Boundaries": np.zeros((1, 1)), "CategoriesPresent": np.array(ks, dtype=np.uint8)}
        scipy.io.savemat(sbd / "dataset" / "cls" / f"{i}.mat", {"GTcls": gt})
    (sbd / "dataset" / "train.txt").write_text("2008_000010\n2008_000009\n")
    (sbd / "dataset" / "val.txt").write_text("2009_000011\n2007_000002\n")
    return voc, sbd


def test_voc_with_sbd_builds_train_aug(tmp_path: Path) -> None:
    voc, sbd = _voc_tree(tmp_path, with_sbd=True)
    m = prepare_voc12(tmp_path / "VOCdevkit", sbd, tmp_path / "out")
    assert m.class_names == VOC_CLASSES and m.num_fg == 20
    assert m.ids("train") == sorted([*VOC_TRAIN, *SBD_ONLY])  # VOC val id 2008_000009 removed
    assert m.ids("train_eval") == sorted(VOC_TRAIN) and m.ids("val") == sorted(VOC_VAL)
    for i, ks in {**VOC_TRAIN, **VOC_VAL, **SBD_ONLY}.items():
        assert m.labels[i] == ks
    aug = tmp_path / "out" / "SegmentationClassAug"
    assert sorted(p.stem for p in aug.glob("*.png")) == sorted(SBD_ONLY)  # converted once, VOC GT kept
    assert m.mask_file("2009_000011") == (aug / "2009_000011.png").resolve()
    assert m.mask_file("2007_000002") == voc.resolve() / "SegmentationClass" / "2007_000002.png"
    assert np.array_equal(load_label_png(aug / "2009_000011.png")[:3, 2:10], np.full((3, 8), 12))
    assert m.image_file("2008_000010").is_file()


def test_voc_without_sbd_uses_voc_train(tmp_path: Path) -> None:
    voc, _ = _voc_tree(tmp_path, with_sbd=False)
    m = prepare_voc12(voc, None, tmp_path / "out")
    assert m.ids("train") == sorted(VOC_TRAIN) == m.ids("train_eval")


def test_prepare_voc_writes_manifest_and_checks(tmp_path: Path) -> None:
    voc, sbd = _voc_tree(tmp_path, with_sbd=True)
    cfg = {"kind": "voc12", "root": str(voc), "sbd_root": str(sbd)}
    m = prepare_dataset(cfg, tmp_path / "out")
    loaded = Manifest.load(tmp_path / "out" / "manifest.json")
    assert loaded.splits == m.splits and loaded.image_file("2007_000001") == m.image_file("2007_000001")


def test_bad_sbd_mat_names_file(tmp_path: Path) -> None:
    voc, sbd = _voc_tree(tmp_path, with_sbd=True)
    bad = sbd / "dataset" / "cls" / "2008_000010.mat"
    scipy.io.savemat(bad, {"other": np.zeros(2)})
    with pytest.raises(ValueError, match="2008_000010.mat"):
        prepare_voc12(voc, sbd, tmp_path / "out")


# --------------------------------------------------------------------------------- COCO


def _coco_tree(tmp_path: Path) -> Path:
    root = tmp_path / "coco"
    cats = [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}]
    square = lambda x0, y0, x1, y1: [[x0, y0, x1, y0, x1, y1, x0, y1]]  # noqa: E731
    train = {
        "images": [
            {"id": 9, "file_name": "COCO_train2014_000000000009.jpg", "height": 16, "width": 20},
            {"id": 5, "file_name": "COCO_train2014_000000000005.jpg", "height": 16, "width": 20},
        ],
        "annotations": [
            # small dog on top of the big person (drawn after despite coming first)
            {"id": 1, "image_id": 9, "category_id": 18, "segmentation": square(4, 4, 7, 7), "area": 16, "iscrowd": 0},
            {"id": 2, "image_id": 9, "category_id": 1, "segmentation": square(0, 0, 11, 11), "area": 144, "iscrowd": 0},
            # crowd: uncompressed RLE (column-major), columns 14..15 fully set
            {
                "id": 3,
                "image_id": 9,
                "category_id": 3,
                "iscrowd": 1,
                "area": 32,
                "segmentation": {"counts": [14 * 16, 32, 4 * 16], "size": [16, 20]},
            },
        ],
        "categories": cats,
    }  # image 5 has no annotation
    val = {
        "images": [{"id": 7, "file_name": "COCO_val2014_000000000007.jpg", "height": 16, "width": 20}],
        "annotations": [
            {"id": 4, "image_id": 7, "category_id": 3, "segmentation": square(2, 2, 9, 5), "area": 32, "iscrowd": 0}
        ],
        "categories": cats,
    }
    (root / "annotations").mkdir(parents=True)
    for name, data in (("train2014", train), ("val2014", val)):
        (root / "annotations" / f"instances_{name}.json").write_text(json.dumps(data))
        for im in data["images"]:
            _jpeg(root / name / im["file_name"], im["id"], (im["width"], im["height"]))
    return root


def test_uncompressed_rle_is_column_major() -> None:
    m = decode_uncompressed_rle({"counts": [1, 2, 3], "size": [2, 3]})
    assert m.tolist() == [[False, True, False], [True, False, False]]


def test_coco_masks_and_labels(tmp_path: Path) -> None:
    m = prepare_coco14(_coco_tree(tmp_path), tmp_path / "out")
    assert m.class_names == ["background", "person", "car", "dog"]  # sorted category ids 1, 3, 18
    tid = "COCO_train2014_000000000009"
    assert m.ids("train") == [tid] == m.ids("train_eval")  # image 5 (no annotation) left out
    assert m.ids("val") == ["COCO_val2014_000000000007"]
    assert m.labels[tid] == [1, 2, 3]
    mask = load_label_png(m.mask_file(tid))
    assert mask.shape == (16, 20)
    assert mask[1, 1] == 1 and mask[5, 5] == 3  # person below, dog on top
    assert (mask[:, 14:16] == 255).all() and mask[13, 12] == 0
    assert m.image_file(tid).is_file()
    before = m.mask_file(tid).stat().st_mtime_ns
    prepare_coco14(tmp_path / "coco", tmp_path / "out")
    assert m.mask_file(tid).stat().st_mtime_ns == before  # written once


def test_coco_compressed_rle_without_pycocotools_says_install(tmp_path: Path) -> None:
    if importlib.util.find_spec("pycocotools") is not None:
        pytest.skip("pycocotools installed")
    root = _coco_tree(tmp_path)
    p = root / "annotations" / "instances_val2014.json"
    data = json.loads(p.read_text())
    data["annotations"][0]["segmentation"] = {"counts": "PPYo0", "size": [16, 20]}
    p.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="pip install pycocotools"):
        prepare_coco14(root, tmp_path / "out")


# ------------------------------------------------------------------------------- folder


def _folder(tmp_path: Path, rows: list[str], masks: dict[str, np.ndarray] | None = None) -> dict:
    root = tmp_path / "imgs"
    for n, line in enumerate(rows[1:]):
        _jpeg(root / f"{line.split(',')[0]}.jpg", n)
    (tmp_path / "tags.csv").write_text("\n".join(rows) + "\n")
    cfg = {"kind": "folder", "root": str(root), "csv": str(tmp_path / "tags.csv"), "class_names": None}
    if masks is not None:
        for i, m in masks.items():
            save_label_png(tmp_path / "masks" / f"{i}.png", m)
        cfg["masks_dir"] = str(tmp_path / "masks")
    return cfg


ROWS = ["image_id,labels,split", "a,cat dog,train", "b,dog,", "c,cat,val", "d,,train"]


def test_folder_loader_splits_and_labels(tmp_path: Path) -> None:
    cfg = _folder(tmp_path, ROWS)
    m = prepare_dataset(cfg, tmp_path / "out")
    assert m.class_names == ["background", "cat", "dog"]
    assert m.ids("train") == ["a", "b"] == m.ids("train_eval") and m.ids("val") == ["c"]
    assert m.labels == {"a": [1, 2], "b": [2], "c": [1], "d": []}
    assert m.meta["unlabelled_train"] == 1 and m.mask_file("a") is None
    assert m.label_vector("a").tolist() == [1.0, 1.0]


def test_folder_class_order_and_masks(tmp_path: Path) -> None:
    masks = {i: np.full((SIZE, SIZE), 2, np.uint8) for i in "abcd"}
    cfg = _folder(tmp_path, ROWS[:-1] + ["d,cat,train"], masks)
    cfg["class_names"] = ["dog", "cat"]
    m = prepare_dataset(cfg, tmp_path / "out")
    assert m.class_names == ["background", "dog", "cat"] and m.labels["a"] == [1, 2]
    assert m.mask_file("c").is_file()


def test_folder_without_val_rows_uses_train(tmp_path: Path) -> None:
    m = prepare_dataset(_folder(tmp_path, ["image_id,labels", "a,cat", "b,dog"]), tmp_path / "out")
    assert m.ids("val") == m.ids("train") == ["a", "b"] and m.meta["val_is_train"]


@pytest.mark.parametrize(
    "rows, pattern",
    [
        (["image_id,labels", "a,cat", "b,unicorn"], r"tags.csv:3 \(image id 'b'\): unknown class name 'unicorn'"),
        (["image_id,labels", "a,cat", "a,dog"], r"tags.csv:3 \(image id 'a'\): duplicate image id"),
        (["image_id,labels,split", "a,cat,test"], r"image id 'a'.*split 'test'"),
        (["image_id,tags", "a,cat"], r"tags.csv: missing column 'labels'"),
    ],
)
def test_folder_csv_errors_name_file_and_id(tmp_path: Path, rows: list[str], pattern: str) -> None:
    cfg = _folder(tmp_path, rows)
    cfg["class_names"] = ["background", "cat", "dog"]
    with pytest.raises(ValueError, match=pattern):
        prepare_dataset(cfg, tmp_path / "out")


def test_unknown_class_against_given_class_names(tmp_path: Path) -> None:
    cfg = _folder(tmp_path, ["image_id,labels", "a,cat dog"])
    cfg["class_names"] = ["background", "cat"]
    with pytest.raises(ValueError, match="image id 'a'.*unknown class name 'dog'"):
        prepare_dataset(cfg, tmp_path / "out")


def test_corrupt_image_is_named(tmp_path: Path) -> None:
    cfg = _folder(tmp_path, ["image_id,labels", "a,cat", "b,dog"])
    (tmp_path / "imgs" / "b.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(ValueError, match=r"image id 'b'.*b\.jpg"):
        prepare_dataset(cfg, tmp_path / "out")
    prepare_dataset(cfg, tmp_path / "out2", check_images=False)  # the check is what caught it


def test_missing_image_is_named(tmp_path: Path) -> None:
    cfg = _folder(tmp_path, ["image_id,labels", "a,cat"])
    (tmp_path / "tags.csv").write_text("image_id,labels\na,cat\nzz,cat\n")
    with pytest.raises(ValueError, match="image id 'zz'"):
        prepare_dataset(cfg, tmp_path / "out")


def test_mask_value_out_of_range_is_named(tmp_path: Path) -> None:
    bad = np.zeros((SIZE, SIZE), np.uint8)
    bad[3, 3] = 7
    cfg = _folder(tmp_path, ["image_id,labels", "a,cat", "b,dog"], {"a": np.zeros((SIZE, SIZE), np.uint8), "b": bad})
    with pytest.raises(ValueError, match=r"image id 'b'.*b\.png.*\[7\]"):
        prepare_dataset(cfg, tmp_path / "out")


def test_missing_mask_is_named(tmp_path: Path) -> None:
    cfg = _folder(tmp_path, ["image_id,labels", "a,cat", "b,dog"], {"a": np.zeros((SIZE, SIZE), np.uint8)})
    with pytest.raises(ValueError, match=r"image id 'b'.*b\.png not found"):
        prepare_dataset(cfg, tmp_path / "out")


def test_mask_size_mismatch_is_named(tmp_path: Path) -> None:
    cfg = _folder(tmp_path, ["image_id,labels", "a,cat"], {"a": np.zeros((8, 8), np.uint8)})
    with pytest.raises(ValueError, match=r"image id 'a'.*shape"):
        prepare_dataset(cfg, tmp_path / "out")


def test_missing_root_names_config_key(tmp_path: Path) -> None:
    cfg = {"kind": "folder", "root": str(tmp_path / "nope"), "csv": str(tmp_path / "x.csv")}
    with pytest.raises(ValueError, match=r"config key dataset\.root: path .*nope does not exist"):
        prepare_dataset(cfg, tmp_path / "out")
    with pytest.raises(ValueError, match=r"config key dataset\.root: required"):
        prepare_dataset({"kind": "voc12", "root": None}, tmp_path / "out")
    with pytest.raises(ValueError, match=r"config key dataset\.kind"):
        prepare_dataset({"kind": "imagenet"}, tmp_path / "out")


def test_empty_split_is_named(tmp_path: Path) -> None:
    cfg = _folder(tmp_path, ["image_id,labels,split", "a,,train", "b,cat,val"])
    with pytest.raises(ValueError, match="split 'train' is empty"):
        prepare_dataset(cfg, tmp_path / "out")


def test_prepare_synthetic_manifest_is_relocatable(tmp_path: Path) -> None:
    syn = {
        "num_train": 3,
        "num_val": 2,
        "image_size": 32,
        "seed": 0,
        "min_objects": 1,
        "max_objects": 2,
        "min_object_frac": 0.3,
        "max_object_frac": 0.5,
        "cooccurrence": 0.5,
        "background_context": 0.5,
        "part_context": 0.5,
        "control": False,
    }
    prepare_dataset({"kind": "synthetic", "root": None, "synthetic": syn}, tmp_path / "data")
    assert json.loads((tmp_path / "data" / "manifest.json").read_text())["root"] == "synthetic"
    (tmp_path / "data").rename(tmp_path / "moved")
    m = Manifest.load(tmp_path / "moved" / "manifest.json")
    assert m.image_file(m.ids("val")[0]).is_file()


# ---------------------------------------------------------------------------- artifacts


def test_index_artifacts_across_shards(tmp_path: Path) -> None:
    for shard, ids in (("0", ["a", "c"]), ("1", ["b"])):
        for i in ids:
            (tmp_path / shard).mkdir(exist_ok=True)
            (tmp_path / shard / f"{i}.npy").write_bytes(b"x")
    (tmp_path / "1" / ".b.123.tmp.npy").write_bytes(b"partial")  # atomic-writer temporary
    (tmp_path / "1" / "b.png").write_bytes(b"other suffix")
    idx = index_artifacts([tmp_path / "0", tmp_path / "1"], ".npy")
    assert idx == {"a": tmp_path / "0" / "a.npy", "b": tmp_path / "1" / "b.npy", "c": tmp_path / "0" / "c.npy"}
    with pytest.raises(ValueError, match="'zz'"):
        idx["zz"]
    require(idx, ["a", "b"], "CAMs")
    with pytest.raises(ValueError, match=r"CAMs in r0/cam: 2 of 3 image ids missing: 'x', 'y'"):
        require(idx, ["a", "x", "y"], "CAMs in r0/cam")
    assert pickle.loads(pickle.dumps(idx)) == idx


def test_index_artifacts_errors(tmp_path: Path) -> None:
    for shard in ("0", "1"):
        (tmp_path / shard).mkdir()
        (tmp_path / shard / "a.png").write_bytes(b"x")
    with pytest.raises(ValueError, match="'a' found twice"):
        index_artifacts([tmp_path / "0", tmp_path / "1"], ".png")
    with pytest.raises(ValueError, match="does not exist"):
        index_artifacts([tmp_path / "nope"], ".png")
    many = [f"m{k}" for k in range(9)]
    with pytest.raises(ValueError, match="9 of 9 image ids missing: 'm0', .* and 4 more"):
        require({}, many, "pseudo-masks")


# ------------------------------------------------------------------------ torch datasets


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Manifest, dict[str, Path]]:
    cfg = _folder(tmp_path, ["image_id,labels", "a,cat", "b,cat dog", "c,dog"])
    m = prepare_dataset(cfg, tmp_path / "out")
    labels = {}
    for n, i in enumerate("abc"):
        lab = np.zeros((SIZE, SIZE), np.uint8)
        lab[:, : 4 + 4 * n] = 1 + n % 2
        save_label_png(tmp_path / "lab" / f"{i}.png", lab)
        labels[i] = tmp_path / "lab" / f"{i}.png"
    return m, labels


def test_classification_items_and_determinism(tiny) -> None:
    m, xm = tiny
    ds = ClassificationDataset(m, ["a", "b", "c"], crop_size=24, scale_range=(0.9, 1.1), seed=1, xm_files=xm)
    it = ds[1]
    assert it["image"].shape == (3, 24, 24) and it["image"].dtype == np.float32
    assert it["label"].tolist() == [1.0, 1.0] and it["id"] == "b"
    assert it["xm"].shape == (24, 24) and it["xm"].dtype == np.uint8
    assert set(np.unique(it["xm"])) <= {0, 2}  # pad 0, never 255
    again = ClassificationDataset(m, ["a", "b", "c"], crop_size=24, scale_range=(0.9, 1.1), seed=1, xm_files=xm)[1]
    assert np.array_equal(it["image"], again["image"]) and np.array_equal(it["xm"], again["xm"])
    ds.set_epoch(1)
    assert not np.array_equal(ds[1]["image"], it["image"])
    plain = ClassificationDataset(m, ["a"], crop_size=8, scale_range=(1, 1))[0]
    assert "xm" not in plain and plain["image"].shape == (3, 8, 8)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["image"].shape == (3, 3, 24, 24) and batch["label"].shape == (3, 2)


def test_segmentation_items_pad_255(tiny) -> None:
    m, labels = tiny
    ds = SegmentationDataset(m, ["a", "c"], labels, crop_size=20, scale_range=(1.0, 1.0), seed=0)
    it = ds[0]
    assert it["label"].shape == (20, 20) and it["label"].dtype == np.int64
    assert (it["label"] == 255).sum() == 20 * 20 - SIZE * SIZE  # padding only
    img_pad = np.all(it["image"] == 0, axis=0)
    assert np.array_equal(img_pad, it["label"] == 255)  # image padded where the label is


def test_datasets_name_bad_files(tiny, tmp_path: Path) -> None:
    m, labels = tiny
    m.image_file("a").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"a\.jpg"):
        SegmentationDataset(m, ["a"], labels, crop_size=8, scale_range=(1, 1))[0]
    with pytest.raises(ValueError, match="no label file for image id 'c'"):
        SegmentationDataset(m, ["c"], {}, crop_size=8, scale_range=(1, 1))[0]
    save_label_png(labels["b"], np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"b\.png.*shape"):
        SegmentationDataset(m, ["b"], labels, crop_size=8, scale_range=(1, 1))[0]
    with pytest.raises(ValueError, match="unknown image id"):
        SegmentationDataset(m, ["nope"], labels, crop_size=8, scale_range=(1, 1))


def test_truncated_jpeg_is_named_before_training(tmp_path: Path) -> None:
    """A JPEG cut after its header opens fine; only a full decode (dataset.check_images) sees it."""
    cfg = _folder(tmp_path, ["image_id,labels", "a,cat", "b,dog"])
    jpg = tmp_path / "imgs" / "b.jpg"
    data = jpg.read_bytes()
    jpg.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"(?i)image id 'b'.*b\.jpg.*truncated"):
        prepare_dataset(cfg, tmp_path / "out")
