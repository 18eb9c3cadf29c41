"""Overview grids on a fake run folder built in tmp_path with the artifact formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conta_core.data.manifest import Manifest
from conta_core.infra.fileio import load_label_png, save_cam, save_label_png, save_torch, voc_palette, write_json
from conta_core.infra.shards import shard_ids
from conta_core.report import visualize

torch.set_num_threads(1)

CLASS_NAMES = ["background", "cat", "dog", "car"]
H, W = 24, 32  # non-square on purpose
TILE = 32
NUM_SHARDS = 2
CONTEXT_SIZE = [4, 4]


def _image(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)


def _mask(classes: list[int]) -> np.ndarray:
    m = np.zeros((H, W), dtype=np.uint8)
    for j, k in enumerate(classes):
        m[4 + 6 * j : 10 + 6 * j, 4 + 8 * j : 14 + 8 * j] = k
    m[0, :] = 255
    return m


def make_manifest(root: Path, num_train: int = 5, num_val: int = 2) -> Manifest:
    """A 3-class manifest with images / GT masks under root/data (train, train_eval, val)."""
    rng = np.random.default_rng(0)
    data = root / "data"
    (data / "img").mkdir(parents=True, exist_ok=True)
    splits: dict[str, list[str]] = {"train": [], "val": []}
    labels, images, masks = {}, {}, {}
    for split, n in (("train", num_train), ("val", num_val)):
        for i in range(n):
            image_id = f"{split}_{i:03d}"
            classes = [1 + i % 3] + ([1 + (i + 1) % 3] if i % 2 else [])
            Image.fromarray(_image(rng)).save(data / "img" / f"{image_id}.png")
            save_label_png(data / "gt" / f"{image_id}.png", _mask(classes))
            splits[split].append(image_id)
            labels[image_id] = sorted(classes)
            images[image_id] = f"img/{image_id}.png"
            masks[image_id] = f"gt/{image_id}.png"
    splits["train_eval"] = list(splits["train"])
    m = Manifest("fake", Path("."), CLASS_NAMES, splits, labels, images, masks)
    m.save(data / "manifest.json")
    return Manifest.load(data / "manifest.json")


def write_cam(path: Path, classes: list[int]) -> None:
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    maps = np.stack([np.exp(-((yy - 8 - 4 * j) ** 2 + (xx - 9 - 6 * j) ** 2) / 40.0) for j in range(len(classes))])
    maps /= maps.max(axis=(1, 2), keepdims=True)
    save_cam(path, np.array([k - 1 for k in classes]), maps[:, ::4, ::4], maps)


def write_classifier(path: Path, num_fg: int) -> None:
    """A round t > 0 classifier checkpoint with an active context module (resnet18, random)."""
    from conta_core.models.classifier import build_classifier

    cls_cfg = {"backbone": "resnet18", "pretrained": None, "freeze_bn": False, "frozen_stages": 0}
    ctx = {"mode": "conta", "block": 5, "size": CONTEXT_SIZE, "xm_encoding": "foreground", "confounder_source": "seg"}
    conf = np.zeros((num_fg, *CONTEXT_SIZE), dtype=np.float32)
    for i in range(num_fg):
        conf[i, i % CONTEXT_SIZE[0], :] = 1.0
    torch.manual_seed(0)
    model = build_classifier(cls_cfg, ctx, num_fg, conf)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_torch(path, {"state_dict": state, "config": {"classifier": cls_cfg, "context": ctx, "num_fg": num_fg}})


def make_fake_run(
    root: Path, rounds: int = 2, skip: tuple[str, ...] = (), classifier: bool = True
) -> tuple[Path, Manifest]:
    """results/<run> with rounds 0..rounds-1 of per-image artifacts in NUM_SHARDS shards.

    skip: artifact folders left out entirely ("cam", "ir_label", "pseudo_mask", "seg_pred").
    """
    run = root / "run"
    manifest = make_manifest(run)
    train = manifest.ids("train")
    for t in range(rounds):
        rd = run / f"round{t}"
        for s in range(NUM_SHARDS):
            for image_id in shard_ids(train, s, NUM_SHARDS):
                classes = manifest.labels[image_id]
                gt = _mask(classes)
                if "cam" not in skip:
                    write_cam(rd / "cam" / str(s) / f"{image_id}.npz", classes)
                if "ir_label" not in skip:
                    save_label_png(rd / "ir_label" / str(s) / f"{image_id}.png", np.where(gt == 0, 255, gt))
                if "pseudo_mask" not in skip:
                    save_label_png(rd / "pseudo_mask" / str(s) / f"{image_id}.png", gt)
                if "seg_pred" not in skip:
                    save_label_png(rd / "seg_pred" / "train" / str(s) / f"{image_id}.png", gt)
        if t > 0 and classifier:
            write_classifier(rd / "cls" / "model.pth", manifest.num_fg)
    return run, manifest


@pytest.fixture(autouse=True)
def _clear_model_cache():
    visualize._classifier.cache_clear()
    yield


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_colorize_label_uses_voc_palette_and_white_ignore():
    rgb = visualize.colorize_label(np.array([[0, 1], [2, 255]], dtype=np.uint8))
    pal = voc_palette()
    assert rgb[0, 1].tolist() == pal[3:6] == [128, 0, 0]
    assert rgb[1, 0].tolist() == pal[6:9] == [0, 128, 0]
    assert rgb[0, 0].tolist() == [0, 0, 0]
    assert rgb[1, 1].tolist() == [255, 255, 255]


def test_overlay_label_blends_and_keeps_ignore_pixels():
    img = np.full((1, 2, 3), 100, dtype=np.uint8)
    out = visualize.overlay_label(img, np.array([[1, 255]], dtype=np.uint8), alpha=0.5)
    assert out[0, 0].tolist() == [114, 50, 50]  # (100 + 128) / 2, (100 + 0) / 2
    assert out[0, 1].tolist() == [100, 100, 100]
    with pytest.raises(ValueError, match="differ in size"):
        visualize.overlay_label(img, np.zeros((2, 2), dtype=np.uint8))


def test_find_artifact_searches_all_shards(tmp_path):
    save_label_png(tmp_path / "r" / "pseudo_mask" / "1" / "a.png", np.zeros((2, 2), np.uint8))
    assert visualize.find_artifact(tmp_path / "r", "pseudo_mask", "a", ".png") == tmp_path / "r/pseudo_mask/1/a.png"
    assert visualize.find_artifact(tmp_path / "r", "pseudo_mask", "b", ".png") is None
    assert visualize.find_artifact(tmp_path / "nothing", "cam", "a", ".npz") is None


def test_grid_of_full_run_has_expected_size_and_content(tmp_path):
    run, manifest = make_fake_run(tmp_path)
    image_id = "train_001"  # classes dog + car -> two CAM columns
    cols = visualize.grid_columns(manifest, image_id, [0, 1])
    assert cols == ["image", "GT", "CAM dog", "CAM car", "IR label", "pseudo-mask", "seg pred", "M_t"]
    out = tmp_path / "grid.png"
    visualize.render_image_grid(run, image_id, [0, 1], out, tile_px=TILE)
    arr = _png(out)
    w, h = visualize.grid_pixel_size(2, len(cols), TILE)
    assert arr.shape == (h, w, 3)
    assert arr.std() > 0
    # the IR label tile of round 0 shows white (255 uncertain) and the dog colour (VOC 2 = 0,128,0)
    title_px, label_px = TILE // visualize.TITLE_FRACTION, TILE // visualize.LABEL_FRACTION
    c = cols.index("IR label")
    tile = arr[title_px : title_px + TILE, label_px + c * TILE : label_px + (c + 1) * TILE].reshape(-1, 3).tolist()
    assert [255, 255, 255] in tile and [0, 128, 0] in tile
    # M_1 is computed (a colour map, not a uniform grey "missing" tile)
    c = cols.index("M_t")
    top, left = 2 * title_px + TILE, label_px + c * TILE  # round-1 row, M_t column
    m_tile = arr[top + 2 : top + TILE - 2, left + 2 : left + TILE - 2]
    assert not np.all(m_tile == visualize.MISSING_GREY)


def test_context_map_matches_the_module(tmp_path):
    from conta_core.models.classifier import load_classifier

    write_classifier(tmp_path / "m.pth", 3)
    model = load_classifier(tmp_path / "m.pth", "cpu")
    label = _mask([1, 2])
    m, alpha = visualize.context_map(model, label, torch.device("cpu"))
    assert m.shape == tuple(CONTEXT_SIZE) and alpha.shape == (3,)
    assert alpha.sum() == pytest.approx(1.0, abs=1e-5)
    # M = sum_i alpha_i c_i / n
    expected = np.einsum("i,ihw->hw", alpha, model.confounder.numpy()) / 3
    np.testing.assert_allclose(m, expected, atol=1e-6)


def test_missing_artifacts_become_grey_tiles(tmp_path):
    run, manifest = make_fake_run(tmp_path, rounds=1, skip=("ir_label", "seg_pred"))
    (run / "round0" / "pseudo_mask" / "0" / "train_000.png").write_bytes(b"not a png")  # unreadable
    out = tmp_path / "grid.png"
    # round 2 does not exist at all; round 1 has no classifier
    visualize.render_image_grid(run, "train_000", [0, 1, 2], out, tile_px=TILE)
    arr = _png(out)
    cols = visualize.grid_columns(manifest, "train_000", [0, 1, 2])
    assert arr.shape[:2] == visualize.grid_pixel_size(3, len(cols), TILE)[::-1]
    title_px, label_px = TILE // visualize.TITLE_FRACTION, TILE // visualize.LABEL_FRACTION
    c = cols.index("seg pred")
    centre = arr[title_px + 2, label_px + c * TILE + 2]
    assert centre.tolist() == [visualize.MISSING_GREY] * 3
    assert arr.std() > 0


def test_val_image_and_image_without_gt(tmp_path):
    run, manifest = make_fake_run(tmp_path, rounds=1)
    d = manifest.to_dict()
    d["masks"].pop("val_000")
    d["root"] = "."
    write_json(run / "data" / "manifest.json", d)
    out = tmp_path / "v.png"
    visualize.render_image_grid(run, "val_000", [0], out, tile_px=TILE)
    assert _png(out).std() > 0


def test_sample_ids_deterministic_subset(tmp_path):
    manifest = make_manifest(tmp_path)
    a = visualize.sample_ids(manifest, 3, seed=0)
    assert a == visualize.sample_ids(manifest, 3, seed=0)
    assert len(a) == 3 and set(a) <= set(manifest.ids("train_eval")) and a == sorted(a)
    assert visualize.sample_ids(manifest, 99, seed=1) == sorted(manifest.ids("train_eval"))


def test_render_samples_writes_one_png_per_id(tmp_path):
    run, _ = make_fake_run(tmp_path, rounds=1, classifier=False)
    paths = visualize.render_samples(run, [0], None, 2, 0, tmp_path / "out", tile_px=TILE)
    assert len(paths) == 2 and all(p.is_file() for p in paths)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in paths)
    paths = visualize.render_samples(run, [0], ["val_001"], 2, 0, tmp_path / "out2", tile_px=TILE)
    assert [p.name for p in paths] == ["val_001.png"]
    with pytest.raises(ValueError, match="nope"):
        visualize.render_samples(run, [0], ["nope"], 2, 0, tmp_path / "out3", tile_px=TILE)


def test_label_png_roundtrip_of_fake_run(tmp_path):
    run, _ = make_fake_run(tmp_path, rounds=1, classifier=False)
    lab = load_label_png(run / "round0" / "ir_label" / "0" / "train_000.png")
    assert set(np.unique(lab)) <= {0, 1, 2, 3, 255}
