"""The `conta` command (pyproject: conta = "conta_core.cli:main").

conta inspect results/<run> [--shards N]
    what exists per round and stage (counts vs the manifest, missing shards,
    checkpoints, confounder set, mIoU of the eval CSVs); exit status 0.
conta cost results/<run> [--round T]
    job-seconds, CPU seconds and peak memory per rule from the run's Snakemake benchmark
    files (conta_core.report.cost), the costliest rule first.
conta predict --model results/<run>/round<t>/seg/model.pth IMAGE [IMAGE ...]
              [--out-dir DIR] [--device auto] [--crf] [--scales S [S ...]] [--no-flip]
    segments images with a trained DeepLab checkpoint; writes DIR/<stem>_mask.png
    (VOC palette PNG, 0 bg, 1..C) and DIR/<stem>_overlay.png. Test scales and flip
    default to the checkpoint's segmentation.infer settings; --crf applies the dense
    CRF with the checkpoint's segmentation.crf parameters.
conta visualize results/<run> [--ids ID ...] [--num-images N] [--rounds T ...]
                [--out-dir DIR] [--seed S] [--tile-px P]
    overview grids (conta_core.report.visualize) of chosen or sampled images.
conta fetch voc12|coco14 [--dest resources] [--base-url URL] [--offline] [--only ITEM,ITEM]
                         [--checksum FILE=ALGO:HEX ...] [--verify] [--overlay PATH]
    downloads VOC 2012 + SBD (or COCO 2014), the torchvision ResNet-50/101 weights and DeepLab's
    init with their checksums checked (resumable), extracts and checks the layout, converts
    DeepLab's init.caffemodel to deeplabv1_resnet101-coco.pth, and writes
    DEST/<dataset>_paths.yaml for `--configfile` (conta_core.data.fetch).
conta import-cams SRC_DIR OUT_DIR
    converts CAM files of IRNet / AMN (<id>.npy pickled dicts) into this pipeline's
    <id>.npz (conta_core.infra.fileio.save_cam), read with a restricted unpickler (numpy arrays and
    torch tensors only); pickles are never loaded anywhere else. Existing outputs are kept.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from conta_core.infra.fileio import atomic_path, load_image, save_label_png

DEFAULT_NUM_IMAGES = 4
MASK_SUFFIX = "_mask.png"
OVERLAY_SUFFIX = "_overlay.png"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="conta", description="Inspect CONTA pipeline runs and use their models.")
    sub = p.add_subparsers(dest="command", required=True)

    ins = sub.add_parser("inspect", help="what exists in a run folder, per round and stage")
    ins.add_argument("run_dir", type=Path, help="results/<run>")
    ins.add_argument("--shards", type=int, default=None, help="number of shards (default: inferred from the folders)")

    cost = sub.add_parser("cost", help="job-seconds and memory per rule, from the run's benchmark files")
    cost.add_argument("run_dir", type=Path, help="results/<run>")
    cost.add_argument("--round", type=int, default=None, help="only the jobs of round T (default: every job)")

    pred = sub.add_parser("predict", help="segment images with a trained segmentation checkpoint")
    pred.add_argument("--model", type=Path, required=True, help="results/<run>/round<t>/seg/model.pth")
    pred.add_argument("images", type=Path, nargs="+", help="RGB image files")
    pred.add_argument("--out-dir", type=Path, default=Path("."), help="output folder (default: current folder)")
    pred.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:K")
    pred.add_argument("--crf", action="store_true", help="dense CRF post-processing (checkpoint's crf settings)")
    pred.add_argument("--scales", type=float, nargs="+", default=None, help="test scales (default: checkpoint's)")
    pred.add_argument("--no-flip", action="store_true", help="no horizontal-flip test augmentation")
    pred.add_argument("--threads", type=int, default=1)

    vis = sub.add_parser("visualize", help="overview grids of images of a run")
    vis.add_argument("run_dir", type=Path, help="results/<run>")
    vis.add_argument("--ids", nargs="+", default=None, help="image ids (default: a sample of train_eval)")
    vis.add_argument("--num-images", type=int, default=DEFAULT_NUM_IMAGES)
    vis.add_argument("--rounds", type=int, nargs="+", default=None, help="default: all round folders")
    vis.add_argument("--out-dir", type=Path, default=None, help="default: <run_dir>/figures/cli")
    vis.add_argument("--seed", type=int, default=0)
    vis.add_argument("--tile-px", type=int, default=None)

    fet = sub.add_parser("fetch", help="download and check the data and weights of a real-data run")
    fet.add_argument("dataset", type=_fetch_dataset, help="voc12 | coco14")
    fet.add_argument("--dest", type=Path, default=Path("resources"), help="folder for the files (default: resources)")
    fet.add_argument("--base-url", default=None, help="a mirror (http(s):// or file://): every file is URL/<file name>")
    fet.add_argument("--offline", action="store_true", help="download nothing; check and extract what is in --dest")
    fet.add_argument(
        "--only",
        type=_comma_list,
        action="extend",
        default=None,
        help="items, comma-separated (repeatable): voc,sbd,resnet50,resnet101,deeplab_init (coco14: coco_train,...)",
    )
    fet.add_argument(
        "--checksum",
        action="append",
        default=None,
        metavar="FILE=ALGO:HEX",
        help="expected checksum of a file (md5 / sha256), overriding DEST/checksums.json and the built-in one",
    )
    fet.add_argument("--verify", action="store_true", help="re-hash every file in place (default: changed files only)")
    fet.add_argument(
        "--overlay", type=Path, default=None, help="write the paths overlay here (default: DEST/<dataset>_paths.yaml)"
    )

    cvt = sub.add_parser("convert-resnet38", help="MXNet ResNet-38 .params -> torch state_dict (SEAM key names)")
    cvt.add_argument("src", type=Path, help="ilsvrc-cls_rna-a1_cls1000_ep-0001.params")
    cvt.add_argument("dst", type=Path, help="output .pth")

    imp = sub.add_parser("import-cams", help="convert IRNet/AMN CAM .npy files into this pipeline's .npz")
    imp.add_argument("src_dir", type=Path, help="folder of <id>.npy CAM dicts (IRNet make_cam.py output)")
    imp.add_argument("out_dir", type=Path, help="output folder of <id>.npz")
    return p


FETCH_DATASETS = ("voc12", "coco14")


def _fetch_dataset(text: str) -> str:
    if text not in FETCH_DATASETS:
        raise argparse.ArgumentTypeError(
            f"unknown dataset {text!r} (known: {', '.join(FETCH_DATASETS)}); the dataset comes first and "
            "--only takes a comma list: conta fetch voc12 --only voc,sbd"
        )
    return text


def _comma_list(text: str) -> list[str]:
    return [t for t in text.split(",") if t]


def cmd_fetch(args: argparse.Namespace) -> int:
    from conta_core.data.fetch import FetchError, fetch

    try:
        path = fetch(
            args.dataset,
            args.dest,
            args.base_url,
            args.offline,
            args.only,
            sys.stderr.isatty(),
            checksums=args.checksum,
            verify=args.verify,
            overlay_path=args.overlay,
        )
    except FetchError as e:
        print(f"conta fetch: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


def cmd_convert_resnet38(args: argparse.Namespace) -> int:
    from conta_core.data.mxnet_params import ParamsFormatError, convert_file

    try:
        print(convert_file(args.src, args.dst))
    except (ParamsFormatError, OSError) as e:
        print(f"conta convert-resnet38: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_import_cams(args: argparse.Namespace) -> int:
    from conta_core.infra.fileio import CAM_SUFFIX, read_irnet_cam, save_cam

    files = sorted(args.src_dir.glob("*.npy"))
    if not files:
        print(f"conta import-cams: no .npy files in {args.src_dir}", file=sys.stderr)
        return 2
    done = 0
    for f in files:
        out = args.out_dir / f"{f.stem}{CAM_SUFFIX}"
        if not out.exists():
            d = read_irnet_cam(f)
            save_cam(out, d["keys"], d["cam"], d["high_res"])
            done += 1
    print(f"{done} of {len(files)} CAM files converted -> {args.out_dir}")
    return 0


# ----------------------------------------------------------------------------- inspect


def cmd_inspect(args: argparse.Namespace) -> int:
    from conta_core.report.inspection import format_inspection, inspect_run

    if not args.run_dir.is_dir():
        print(f"conta inspect: no run folder {args.run_dir}", file=sys.stderr)
        return 2
    table = inspect_run(args.run_dir, args.shards)
    print(format_inspection(args.run_dir, table, args.shards))
    return 0


def cmd_cost(args: argparse.Namespace) -> int:
    from conta_core.report.cost import cost_table, format_cost, read_benchmarks

    if not (args.run_dir / "benchmarks").is_dir():
        print(f"conta cost: no benchmark folder {args.run_dir / 'benchmarks'}", file=sys.stderr)
        return 2
    print(format_cost(args.run_dir, cost_table(read_benchmarks(args.run_dir), args.round), args.round))
    return 0


# ----------------------------------------------------------------------------- predict


def predict_settings(
    cfg_seg: dict, scales: Sequence[float] | None, no_flip: bool, crf: bool, model_path: Path
) -> tuple[list[float], bool, dict | None]:
    """(scales, flip, crf params or None) from the checkpoint's segmentation config and the flags."""
    infer = cfg_seg.get("infer", {})
    if scales is None:
        if "scales" not in infer:
            raise ValueError(f"{model_path}: checkpoint config lacks segmentation.infer.scales; pass --scales")
        scales = infer["scales"]
    flip = False if no_flip else bool(infer.get("flip", True))
    crf_params = None
    if crf:
        if "crf" not in cfg_seg:
            raise ValueError(f"{model_path}: checkpoint config lacks the segmentation.crf section needed by --crf")
        crf_params = cfg_seg["crf"]
    return [float(s) for s in scales], flip, crf_params


def predict_files(
    model_path: Path,
    images: list[Path],
    out_dir: Path,
    device,
    scales: Sequence[float] | None = None,
    no_flip: bool = False,
    crf: bool = False,
) -> list[tuple[Path, Path]]:
    """Segment each image; write out_dir/<stem>_mask.png and <stem>_overlay.png. Returns the pairs."""
    from conta_core.infra.checkpoint import load_model
    from conta_core.models.deeplab import deeplab_from_checkpoint
    from conta_core.report.visualize import overlay_label
    from conta_core.steps.segment import predict_labels

    ckpt = load_model(model_path, "segmentation", required=("config", "num_classes"))  # read once
    scales, flip, crf_params = predict_settings(ckpt["config"], scales, no_flip, crf, model_path)
    model = deeplab_from_checkpoint(ckpt, model_path, device)
    stems = [p.stem for p in images]
    if len(set(stems)) != len(stems):
        raise ValueError(f"conta predict: two input images share a file stem ({stems}); outputs would collide")
    written = []
    for path in images:
        img = load_image(path)
        label = predict_labels(model, img, scales, flip, device, crf_params)
        mask_png, overlay_png = out_dir / f"{path.stem}{MASK_SUFFIX}", out_dir / f"{path.stem}{OVERLAY_SUFFIX}"
        save_label_png(mask_png, label)
        with atomic_path(overlay_png) as tmp:
            Image.fromarray(overlay_label(img, label)).save(tmp, format="PNG")
        present = [int(k) for k in np.unique(label) if k != 0]
        logging.getLogger("conta.cli").info("%s: classes %s -> %s", path, present, mask_png)
        written.append((mask_png, overlay_png))
    return written


def cmd_predict(args: argparse.Namespace) -> int:
    from conta_core.infra.device import claim_device, set_threads

    missing = [str(p) for p in [args.model, *args.images] if not p.is_file()]
    if missing:
        print(f"conta predict: file not found: {missing[0]}", file=sys.stderr)
        return 2
    set_threads(args.threads)
    device = claim_device(args.device)
    pairs = predict_files(args.model, args.images, args.out_dir, device, args.scales, args.no_flip, args.crf)
    for mask_png, overlay_png in pairs:
        print(f"{mask_png}\t{overlay_png}")
    return 0


# ----------------------------------------------------------------------------- visualize


def cmd_visualize(args: argparse.Namespace) -> int:
    from conta_core.report.inspection import find_rounds
    from conta_core.report.visualize import DEFAULT_TILE_PX, render_samples

    rounds = args.rounds if args.rounds is not None else find_rounds(args.run_dir)
    if not rounds:
        print(f"conta visualize: no round folders in {args.run_dir}", file=sys.stderr)
        return 2
    out_dir = args.out_dir if args.out_dir is not None else args.run_dir / "figures" / "cli"
    tile_px = args.tile_px if args.tile_px is not None else DEFAULT_TILE_PX
    for p in render_samples(args.run_dir, rounds, args.ids, args.num_images, args.seed, out_dir, tile_px=tile_px):
        print(p)
    return 0


COMMANDS = {
    "inspect": cmd_inspect,
    "cost": cmd_cost,
    "predict": cmd_predict,
    "visualize": cmd_visualize,
    "fetch": cmd_fetch,
    "import-cams": cmd_import_cams,
    "convert-resnet38": cmd_convert_resnet38,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `conta`; returns the exit status (also used by sys.exit)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return COMMANDS[args.command](args)
    except ValueError as e:
        print(f"conta {args.command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
