"""Tests of the confounded synthetic dataset generator."""

from __future__ import annotations

import filecmp
from pathlib import Path

import numpy as np
import pytest
import torch

from conta_core.data.manifest import Manifest
from conta_core.data.synthetic import (
    CLASS_CATALOGUE,
    TEXTURES,
    SynthConfig,
    confounding_stats,
    generate_synthetic,
    render_scene,
    sample_scene,
)
from conta_core.infra.fileio import load_image, load_label_png

torch.set_num_threads(1)

BASE = {
    "num_train": 12,
    "num_val": 4,
    "image_size": 48,
    "seed": 3,
    "min_objects": 1,
    "max_objects": 3,
    "min_object_frac": 0.25,
    "max_object_frac": 0.45,
    "cooccurrence": 0.9,
    "background_context": 0.9,
    "part_context": 0.7,
    "control": False,
}


def _cfg(**kw) -> dict:
    return {**BASE, **kw}


def _stats_cfg(**kw) -> dict:
    """Many small images for rate measurements (fast: 32 px)."""
    return _cfg(**{"num_train": 300, "num_val": 1, "image_size": 32, **kw})


def test_same_config_gives_identical_files(tmp_path: Path) -> None:
    generate_synthetic(tmp_path / "a", _cfg())
    generate_synthetic(tmp_path / "b", _cfg())
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == 2 * 16 + 3
    for f in files_a:
        assert filecmp.cmp(tmp_path / "a" / f, tmp_path / "b" / f, shallow=False), f


def test_other_seed_gives_other_images(tmp_path: Path) -> None:
    m1 = generate_synthetic(tmp_path / "a", _cfg())
    m2 = generate_synthetic(tmp_path / "b", _cfg(seed=4))
    i = m1.ids("train")[0]
    assert not np.array_equal(load_image(m1.image_file(i)), load_image(m2.image_file(i)))


def test_layout_masks_and_labels(tmp_path: Path) -> None:
    m = generate_synthetic(tmp_path, _cfg())
    assert (tmp_path / "ImageSets" / "Segmentation" / "train.txt").read_text().split() == m.ids("train")
    assert m.ids("train_eval") == m.ids("train") and len(m.ids("val")) == 4
    assert m.class_names[0] == "background" and m.num_fg == len(CLASS_CATALOGUE) >= 6
    loaded = Manifest.load(tmp_path / "manifest.json")
    assert loaded.root == tmp_path.resolve() and loaded.labels == m.labels
    saw_void = False
    for i in m.ids("train") + m.ids("val"):
        img, mask = load_image(m.image_file(i)), load_label_png(m.mask_file(i))
        assert img.shape == (48, 48, 3) and mask.shape == (48, 48)
        values = set(np.unique(mask).tolist())
        assert values <= set(range(m.num_classes)) | {255}
        assert set(m.labels[i]) == values - {0, 255}  # every labelled object keeps visible GT
        assert 1 <= len(m.labels[i])
        saw_void |= 255 in values
    assert saw_void


def test_void_band_lies_on_object_boundaries() -> None:
    sc = SynthConfig.from_dict(_cfg(void_width=1))
    scene = render_scene(sample_scene(np.random.default_rng(0), sc), sc)
    void = scene.label == 255
    assert void.any()
    clean = scene.clean_label
    # every void pixel has a differently labelled pixel within 1 px (Chebyshev)
    pad = np.pad(clean, 1, mode="edge")
    ys, xs = np.nonzero(void)
    for y, x in zip(ys, xs):
        window = pad[y : y + 3, x : x + 3]
        assert (window != clean[y, x]).any()
    assert np.array_equal(scene.label[~void], clean[~void])


def test_cooccurrence_knob_sets_partner_rate(tmp_path: Path) -> None:
    stats = confounding_stats(generate_synthetic(tmp_path / "c", _stats_cfg(cooccurrence=0.9)))
    ctrl = confounding_stats(generate_synthetic(tmp_path / "k", _stats_cfg(control=True)))
    for pair, s in stats["cooccurrence"].items():
        assert s["n"] > 50
        expected = 0.9 + 0.1 * ctrl["cooccurrence"][pair]["base_rate"]
        assert abs(s["rate"] - expected) < 0.08, (pair, s, expected)
        c = ctrl["cooccurrence"][pair]
        assert abs(c["rate"] - c["base_rate"]) < 0.12, (pair, c)  # independent classes
        assert c["rate"] < 0.6


def _pooled(rates: dict) -> float:
    """Rate over all images of all classes (n-weighted), less noisy than per class."""
    return sum(r["rate"] * r["n"] for r in rates.values()) / sum(r["n"] for r in rates.values())


def test_background_knob_sets_texture_match(tmp_path: Path) -> None:
    single = _stats_cfg(min_objects=1, max_objects=1, background_context=0.6)
    stats = confounding_stats(generate_synthetic(tmp_path / "b", single))["background_match"]
    ctrl = confounding_stats(generate_synthetic(tmp_path / "k", {**single, "control": True}))["background_match"]
    assert all(s["n"] > 20 for s in stats.values())
    assert abs(_pooled(stats) - (0.6 + 0.4 / len(TEXTURES))) < 0.08, stats
    assert abs(_pooled(ctrl) - 1 / len(TEXTURES)) < 0.08, ctrl
    for cls in stats:
        assert stats[cls]["rate"] > 0.5 > ctrl[cls]["rate"], (cls, stats[cls], ctrl[cls])


def test_control_turns_all_knobs_off(tmp_path: Path) -> None:
    m = generate_synthetic(tmp_path, _cfg(control=True, num_train=60))
    assert m.meta["knobs"] == {"cooccurrence": 0.0, "background_context": 0.0, "part_context": 0.0}
    assert confounding_stats(m)["part_copy"]["car"]["rate"] == 0.0


def _car_scene(sc: SynthConfig, want_copy: bool):
    for seed in range(500):
        spec = sample_scene(np.random.default_rng(seed), sc)
        cars = [o for o in spec.objects if o.cls == "car"]
        if cars and cars[-1] is spec.objects[-1] and cars[-1].copy_part == want_copy:
            return spec
    raise AssertionError("no scene with a car on top")


def test_part_context_copies_background_but_gt_keeps_object() -> None:
    sc = SynthConfig.from_dict(_cfg(part_context=1.0))
    scene = render_scene(_car_scene(sc, True), sc)
    car = list(CLASS_CATALOGUE).index("car") + 1
    part = scene.part_mask
    assert part.sum() > 10
    assert np.array_equal(scene.image[part], scene.background[part])
    assert (scene.clean_label[part] == car).all()
    body = (scene.clean_label == car) & ~part
    assert np.abs(scene.image[body].astype(int) - scene.background[body].astype(int)).mean() > 40


def test_no_part_copy_when_knob_is_zero() -> None:
    sc = SynthConfig.from_dict(_cfg(part_context=0.0))
    spec = _car_scene(sc, False)
    scene = render_scene(spec, sc)
    assert not scene.part_mask.any()
    car = list(CLASS_CATALOGUE).index("car") + 1
    region = scene.clean_label == car
    assert np.abs(scene.image[region].astype(int) - scene.background[region].astype(int)).mean() > 40


def test_part_copy_rate_follows_knob(tmp_path: Path) -> None:
    m = generate_synthetic(tmp_path, _stats_cfg(part_context=0.5, num_train=200))
    s = confounding_stats(m)["part_copy"]["car"]
    assert s["n"] > 40 and abs(s["rate"] - 0.5) < 0.15


@pytest.mark.parametrize(
    "bad, key",
    [
        ({"cooccurrence": 1.5}, "cooccurrence"),
        ({"min_objects": 4, "max_objects": 2}, "min_objects"),
        ({"cooccurrence_pairs": [["horse", "unicorn"]]}, "cooccurrence_pairs"),
        ({"context_textures": {"boat": "lava"}}, "context_textures"),
        ({"part_classes": ["horse"]}, "part_classes"),
        ({"colour": 1}, "colour"),
    ],
)
def test_bad_config_names_the_key(bad: dict, key: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"dataset.synthetic.{key}"):
        generate_synthetic(tmp_path, _cfg(**bad))


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({k: v for k, v in BASE.items() if k != "seed"}, "config key dataset.synthetic.seed: missing"),
        ({**BASE, "seed": None}, "config key dataset.synthetic.seed: missing"),
        ({**BASE, "colour": 1}, "config key dataset.synthetic.colour: unknown key"),
        ({**BASE, "min_objects": 3, "max_objects": 2}, "config key dataset.synthetic.min_objects: need"),
        ({**BASE, "image_size": 8}, "config key dataset.synthetic.image_size: need >= 16"),
        ({**BASE, "part_classes": ["cow"]}, "config key dataset.synthetic.part_classes: 'cow' has no part"),
    ],
)
def test_config_errors_name_the_key_once(cfg, message) -> None:
    with pytest.raises(ValueError) as err:
        SynthConfig.from_dict(cfg)
    assert str(err.value).startswith(message) and str(err.value).count("config key") == 1, str(err.value)
