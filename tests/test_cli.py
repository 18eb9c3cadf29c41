"""The `conta` command: argument parsing, inspect, predict (tiny DeepLab), visualize."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conta_core import cli
from conta_core.infra.fileio import load_label_png, save_torch

torch.set_num_threads(1)

SEG_CFG = {
    "backbone": "resnet18",
    "pretrained": None,
    "output_stride": 8,
    "aspp_rates": [2, 4],
    "freeze_bn": False,
    "msc_scales": [1.0, 0.5],
    "infer": {"scales": [1.0], "flip": True, "crf": False},
    "crf": {
        "iterations": 1,
        "gaussian_sxy": 1,
        "gaussian_compat": 3,
        "bilateral_sxy": 67,
        "bilateral_srgb": 3,
        "bilateral_compat": 4,
    },
}
NUM_CLASSES = 3


def test_parser_predict_flags():
    args = cli.build_parser().parse_args(
        [
            "predict",
            "--model",
            "m.pth",
            "a.jpg",
            "b.jpg",
            "--out-dir",
            "o",
            "--device",
            "cpu",
            "--crf",
            "--scales",
            "1.0",
            "0.5",
            "--no-flip",
        ]
    )
    assert args.command == "predict" and args.model == Path("m.pth")
    assert args.images == [Path("a.jpg"), Path("b.jpg")] and args.out_dir == Path("o")
    assert args.device == "cpu" and args.crf and args.no_flip and args.scales == [1.0, 0.5]


def test_parser_defaults_and_errors(capsys):
    args = cli.build_parser().parse_args(["predict", "--model", "m.pth", "x.png"])
    assert args.out_dir == Path(".") and args.device == "auto" and not args.crf and args.scales is None
    args = cli.build_parser().parse_args(["inspect", "results/r"])
    assert args.run_dir == Path("results/r") and args.shards is None
    for bad in ([], ["predict", "x.png"], ["nope"]):
        with pytest.raises(SystemExit):
            cli.build_parser().parse_args(bad)


def test_predict_settings_from_checkpoint_config():
    assert cli.predict_settings(SEG_CFG, None, False, False, Path("m")) == ([1.0], True, None)
    scales, flip, crf = cli.predict_settings(SEG_CFG, [0.5], True, True, Path("m"))
    assert scales == [0.5] and flip is False and crf == SEG_CFG["crf"]
    with pytest.raises(ValueError, match=r"m\.pth: .*segmentation\.crf"):
        cli.predict_settings({"infer": {"scales": [1.0]}}, None, False, True, Path("m.pth"))


def _checkpoint(path: Path) -> None:
    from conta_core.models.deeplab import build_deeplab, checkpoint_dict

    torch.manual_seed(0)
    model = build_deeplab(SEG_CFG, NUM_CLASSES, load_pretrained=False)
    save_torch(path, checkpoint_dict(model, SEG_CFG, NUM_CLASSES))


def test_predict_writes_mask_and_overlay(tmp_path, capsys):
    _checkpoint(tmp_path / "model.pth")
    img = np.random.default_rng(0).integers(0, 256, (20, 28, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "photo.jpg")
    rc = cli.main(
        [
            "predict",
            "--model",
            str(tmp_path / "model.pth"),
            str(tmp_path / "photo.jpg"),
            "--out-dir",
            str(tmp_path / "out"),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    mask = load_label_png(tmp_path / "out" / "photo_mask.png")
    assert mask.shape == (20, 28) and mask.max() < NUM_CLASSES
    with Image.open(tmp_path / "out" / "photo_mask.png") as im:
        assert im.mode == "P"
    with Image.open(tmp_path / "out" / "photo_overlay.png") as im:
        assert im.size == (28, 20) and im.mode == "RGB"
    assert "photo_mask.png" in capsys.readouterr().out


def test_predict_missing_file_and_bad_checkpoint(tmp_path, capsys):
    assert cli.main(["predict", "--model", str(tmp_path / "none.pth"), "x.jpg", "--device", "cpu"]) == 2
    assert "none.pth" in capsys.readouterr().err
    save_torch(tmp_path / "bad.pth", {"state_dict": {}})
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "x.png")
    assert cli.main(["predict", "--model", str(tmp_path / "bad.pth"), str(tmp_path / "x.png"), "--device", "cpu"]) == 1
    assert "bad.pth" in capsys.readouterr().err


def test_inspect_and_visualize_commands(tmp_path, capsys):
    from test_visualize import make_fake_run  # tests/ is on sys.path (pytest rootdir insertion)

    run, _ = make_fake_run(tmp_path, rounds=1, classifier=False)
    assert cli.main(["inspect", str(run)]) == 0
    out = capsys.readouterr().out
    assert "pseudo_mask" in out and "5/5" in out
    assert cli.main(["inspect", str(tmp_path / "absent")]) == 2
    argv = ["visualize", str(run), "--ids", "train_000", "--tile-px", "32", "--out-dir", str(tmp_path / "v")]
    assert cli.main(argv) == 0
    assert (tmp_path / "v" / "train_000.png").is_file()


def _irnet_cam_file(path, keys, cam, high_res):
    """A CAM file as IRNet's make_cam.py writes it: np.save of a dict holding torch tensors."""
    import torch

    np.save(path, {"keys": torch.tensor(keys), "cam": torch.from_numpy(cam), "high_res": high_res}, allow_pickle=True)


def test_import_cams_converts_irnet_files_without_pickle_elsewhere(tmp_path, capsys):
    from conta_core.infra.fileio import load_cam

    rng = np.random.default_rng(0)
    src, out = tmp_path / "irnet_cam", tmp_path / "cam"
    src.mkdir()
    want = {}
    for name in ("a", "b"):
        cam = rng.random((2, 3, 4), dtype=np.float32)
        high = rng.random((2, 10, 13), dtype=np.float32)
        _irnet_cam_file(src / f"{name}.npy", [0, 4], cam, high)
        want[name] = (cam, high)
    with pytest.raises(ValueError, match="pickled CAM file.*conta import-cams"):
        load_cam(src / "a.npy")
    assert cli.main(["import-cams", str(src), str(out)]) == 0
    assert "2 of 2 CAM files converted" in capsys.readouterr().out
    for name, (cam, high) in want.items():
        got = load_cam(out / f"{name}.npz")
        assert got["keys"].tolist() == [0, 4] and got["keys"].dtype == np.int64
        np.testing.assert_array_equal(got["cam"], cam)
        np.testing.assert_array_equal(got["high_res"], high)


def test_import_cams_refuses_a_pickle_that_runs_code(tmp_path, capsys):
    import os

    src = tmp_path / "evil"
    src.mkdir()
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    np.save(src / "x.npy", {"keys": Evil(), "cam": 0, "high_res": 0}, allow_pickle=True)
    assert cli.main(["import-cams", str(src), str(tmp_path / "out")]) == 1
    assert "refusing to unpickle" in capsys.readouterr().err
    assert not marker.exists()
