"""Download and check the data and weights of a real-data run: `conta fetch voc12`.

    conta fetch voc12 --dest resources [--base-url URL] [--offline] [--only voc sbd ...]

What `voc12` fetches into DEST (about 3.4 GB of archives, 5 GB extracted):

| item | source | checksum |
| --- | --- | --- |
| `voc` | PASCAL VOC 2012 trainval, host.robots.ox.ac.uk | md5 published with the dataset (as torchvision's VOCSegmentation checks it) |
| `sbd` | SBD `benchmark.tgz` (Hariharan et al., ICCV 2011), www2.eecs.berkeley.edu | md5 as torchvision's SBDataset checks it |
| `resnet50`, `resnet101` | torchvision ImageNet weights, download.pytorch.org | the sha256 prefix in the file name (torchvision's own check) |
| `deeplab_init` | DeepLab-v2's released `prototxt_and_model.zip` (liangchiehchen.com), holding `init.caffemodel` (the COCO-pretrained init) | none published: its sha256 is printed and recorded in DEST/checksums.json on the first download, and checked against that record afterwards |

Then it writes DEST/voc12_paths.yaml, an overlay with `dataset.root`, `dataset.sbd_root` and
every `pretrained:` path, so the VOC run needs no hand edits:

    snakemake --configfile config/voc12.yaml resources/voc12_paths.yaml --profile profiles/slurm round3

`segmentation.pretrained` names `deeplabv1_resnet101-coco.pth`, the caffe model converted by
deeplab-pytorch's `convert.py` (https://github.com/kazuto1011/deeplab-pytorch); until that
file exists the layout check says how to make it.

Why pooch (https://www.fatiando.org/pooch): it is the ecosystem's downloader with hash
checking (md5 / sha256), a progress bar and a move into place only after the hash matched,
so a truncated or corrupt download never sits where a later step would take it as good.
[OURS] A partial download is resumed: the downloader handed to pooch keeps DEST/.partial/
<file> and continues it with an HTTP Range request (pooch itself restarts from 0; a 2 GB
archive over a flaky link needs the resume). A connection that drops, a short body, a
server error or a checksum mismatch raise FetchError naming the file and the URL; the bad
file is never moved into place (a mismatching partial is deleted, an interrupted one kept
for the resume). Archives are extracted into a temporary folder and renamed into place;
extraction refuses members outside the target (tarfile's "data" filter).

Mirrors and offline use: --base-url URL fetches every file as URL/<file name> (a lab
mirror, or the tests' local server); --offline downloads nothing and only checks that the
files and folders are already there (the "files are already here" path: put the archives
or the extracted folders into DEST yourself).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from conta_core.infra.fileio import write_json, write_text

log = logging.getLogger("conta.fetch")

CHUNK = 1 << 20  # hashing
NET_CHUNK = 1 << 16  # writes to the partial file: what was received before a drop is kept
TIMEOUT_S = 60  # per read: a stalled server fails instead of hanging a cluster job
PARTIAL_DIR = ".partial"
CHECKSUMS_FILE = "checksums.json"
OVERLAY_FILE = "voc12_paths.yaml"
DEEPLAB_CONVERTED = "deeplabv1_resnet101-coco.pth"


class FetchError(RuntimeError):
    """A download, checksum, extraction or layout problem; the message names file and URL."""


@dataclass(frozen=True)
class Item:
    """One file to fetch: name (CLI key), url, file name, hash ("md5:..", "sha256:..",
    "sha256-prefix:.." or None = record on first use), extract_to (folder that must exist
    after extraction, relative to DEST; None = no archive) and what to check inside it."""

    name: str
    url: str
    fname: str
    known_hash: str | None
    extract_to: str | None = None
    layout: tuple[str, ...] = ()


VOC12_ITEMS = (
    Item("voc", "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
         "VOCtrainval_11-May-2012.tar", "md5:6cd6e144f989b92b3379bac3b3de84fd", "VOCdevkit/VOC2012",
         ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation/train.txt", "ImageSets/Segmentation/val.txt")),
    Item("sbd", "http://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz",
         "benchmark.tgz", "md5:82b4d87ceb2ed10f6038a1cba92111cb", "benchmark_RELEASE/dataset",
         ("cls", "img", "train.txt", "val.txt")),
    Item("resnet50", "https://download.pytorch.org/models/resnet50-19c8e357.pth", "resnet50-19c8e357.pth",
         "sha256-prefix:19c8e357"),
    Item("resnet101", "https://download.pytorch.org/models/resnet101-5d3b4d8f.pth", "resnet101-5d3b4d8f.pth",
         "sha256-prefix:5d3b4d8f"),
    Item("deeplab_init", "http://liangchiehchen.com/projects/released/deeplab_aspp_resnet101/prototxt_and_model.zip",
         "prototxt_and_model.zip", None, "deeplab_init", ("init.caffemodel",)),
)  # fmt: skip
DATASETS = {"voc12": VOC12_ITEMS}


# ------------------------------------------------------------------------------ checksums


def file_hash(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def check_hash(path: Path, known: str | None, url: str) -> str:
    """sha256 of `path`; FetchError naming file and URL when it does not match `known`."""
    sha256 = file_hash(path, "sha256")
    if known is None:
        return sha256
    kind, _, want = known.partition(":")
    got = sha256 if kind.startswith("sha256") else file_hash(path, kind)
    ok = got.startswith(want) if kind == "sha256-prefix" else got == want
    if not ok:
        raise FetchError(
            f"{path.name} from {url}: {kind} {got} does not match the published {want} "
            "(a corrupt or truncated download, or another file at that URL)"
        )
    return sha256


# ------------------------------------------------------------------------------ download


class ResumableDownloader:
    """A pooch downloader (callable(url, output_file, pooch)) that continues DEST/.partial/<file>
    with an HTTP Range request and raises FetchError on a short body or a dropped connection."""

    def __init__(self, partial_dir: Path, progressbar: bool = True) -> None:
        self.partial_dir = Path(partial_dir)
        self.progressbar = progressbar

    def __call__(self, url: str, output_file, pooch_obj=None, check_only: bool = False):
        import requests

        if check_only:
            return True
        partial = self.partial_dir / Path(url).name
        partial.parent.mkdir(parents=True, exist_ok=True)
        have = partial.stat().st_size if partial.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            with requests.get(url, headers=headers, stream=True, timeout=TIMEOUT_S) as r:
                if r.status_code == 416 and have:  # the partial file is already complete
                    total = have
                else:
                    r.raise_for_status()
                    if have and r.status_code != 206:  # no range support: start again
                        have = 0
                    length = r.headers.get("Content-Length")
                    total = have + int(length) if length is not None else None
                    mode = "ab" if have else "wb"
                    if have:
                        log.info("%s: resuming at %.1f MB", partial.name, have / 1e6)
                    bar = self._bar(total, have, partial.name)
                    with open(partial, mode) as f:
                        for block in r.iter_content(NET_CHUNK):
                            f.write(block)
                            if bar is not None:
                                bar.update(len(block))
                    if bar is not None:
                        bar.close()
        except requests.RequestException as e:
            raise FetchError(
                f"{partial.name} from {url}: download failed ({e}); the partial file "
                f"{partial} is kept and the next run resumes it"
            ) from e
        size = partial.stat().st_size
        if total is not None and size != total:
            raise FetchError(
                f"{partial.name} from {url}: got {size} of {total} bytes (the connection "
                f"dropped); the partial file {partial} is kept and the next run resumes it"
            )
        shutil.copyfile(partial, output_file)  # pooch checks the hash, then moves it into place
        partial.unlink()

    def _bar(self, total, initial, desc):
        if not self.progressbar:
            return None
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, unit="B", unit_scale=True, desc=desc, leave=False)


def download(item: Item, dest: Path, base_url: str | None, records: dict, progressbar: bool = True) -> Path:
    """DEST/<fname>, downloaded (resumed) and hash-checked unless it is already there and good."""
    import pooch

    url = f"{base_url.rstrip('/')}/{item.fname}" if base_url else item.url
    target = dest / item.fname
    known = item.known_hash or records.get(item.fname)
    if known and known.startswith("sha256-prefix:"):
        pooch_hash = None  # pooch knows full hashes only: checked below
    else:
        pooch_hash = known
    try:
        path = Path(
            pooch.retrieve(
                url,
                known_hash=pooch_hash,
                fname=item.fname,
                path=dest,
                downloader=ResumableDownloader(dest / PARTIAL_DIR, progressbar),
            )
        )
    except ValueError as e:  # pooch's hash mismatch: it has already deleted its temporary file
        raise FetchError(f"{item.fname} from {url}: {e}") from e
    try:
        sha256 = check_hash(path, known, url)
    except FetchError:
        path.unlink()  # never leave a bad file where the next run would take it as good
        raise
    if item.known_hash is None and item.fname not in records:
        records[item.fname] = f"sha256:{sha256}"
        log.info("%s: no published checksum; recorded sha256 %s in %s", item.fname, sha256, CHECKSUMS_FILE)
    log.info("%s: ok (%s)", target.name, known or f"sha256:{sha256}")
    return path


# ------------------------------------------------------------------------------ extraction


def extract(archive: Path, dest: Path, item: Item) -> Path:
    """Extract `archive` into DEST (zip: into DEST/<extract_to>) through a temporary folder;
    returns DEST/<extract_to>. Members outside the target are refused."""
    final = dest / item.extract_to
    top = Path(item.extract_to).parts[0]
    tmp = dest / f".extract-{item.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if archive.suffix == ".zip":
            with zipfile.ZipFile(archive) as z:
                for m in z.namelist():
                    if Path(m).is_absolute() or ".." in Path(m).parts:
                        raise FetchError(f"{archive}: member {m!r} points outside the target")
                z.extractall(tmp / top)
        else:
            with tarfile.open(archive) as t:
                t.extractall(tmp, filter="data")
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise FetchError(f"{archive}: cannot extract ({e}); delete it to download it again") from e
    if not (tmp / item.extract_to).exists():
        shutil.rmtree(tmp, ignore_errors=True)
        raise FetchError(f"{archive}: holds no {item.extract_to}/ (not the expected archive)")
    if (dest / top).exists():
        shutil.rmtree(dest / top)
    os.replace(tmp / top, dest / top)
    shutil.rmtree(tmp, ignore_errors=True)
    return final


def check_layout(dest: Path, item: Item) -> list[str]:
    """What is missing of `item` under DEST (empty when complete)."""
    if item.extract_to is None:
        return [] if (dest / item.fname).is_file() else [str(dest / item.fname)]
    root = dest / item.extract_to
    return [str(root / rel) for rel in item.layout if not (root / rel).exists()]


# ------------------------------------------------------------------------------ the command


def overlay(dest: Path) -> dict:
    """The config overlay that points the voc12 run at DEST."""
    d = dest.resolve()
    return {
        "dataset": {"root": str(d / "VOCdevkit/VOC2012"), "sbd_root": str(d / "benchmark_RELEASE/dataset")},
        "classifier": {"pretrained": str(d / "resnet50-19c8e357.pth")},
        "irn": {"pretrained": str(d / "resnet50-19c8e357.pth")},
        "amn": {"pretrained": str(d / "resnet50-19c8e357.pth")},
        "segmentation": {"pretrained": str(d / DEEPLAB_CONVERTED)},
    }


def fetch(
    dataset: str,
    dest: Path,
    base_url: str | None = None,
    offline: bool = False,
    only: list[str] | None = None,
    progressbar: bool = True,
) -> Path:
    """Fetch (or, offline, check) every item of `dataset`; write the overlay; return its path.
    FetchError lists what is missing or bad."""
    if dataset not in DATASETS:
        raise FetchError(f"unknown dataset {dataset!r} (known: {', '.join(DATASETS)})")
    items = [i for i in DATASETS[dataset] if not only or i.name in only]
    if only and len(items) != len(set(only)):
        known = ", ".join(i.name for i in DATASETS[dataset])
        raise FetchError(f"--only {' '.join(only)}: unknown item (known: {known})")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    rec_path = dest / CHECKSUMS_FILE
    records = json.loads(rec_path.read_text()) if rec_path.exists() else {}
    problems = []
    for item in items:
        missing = check_layout(dest, item)
        if not missing:
            log.info("%s: already in place", item.name)
            continue
        if offline:
            problems.append(
                f"{item.name}: missing {', '.join(missing)} (--offline: nothing is downloaded; put "
                f"{item.fname} from {item.url} into {dest})"
            )
            continue
        archive = download(item, dest, base_url, records, progressbar)
        write_json(rec_path, records)
        if item.extract_to is not None:
            extract(archive, dest, item)
            missing = check_layout(dest, item)
            if missing:
                problems.append(f"{item.name}: after extracting {archive.name}, missing {', '.join(missing)}")
    if problems:
        raise FetchError("; ".join(problems))
    path = dest / OVERLAY_FILE
    write_text(
        path,
        "# written by `conta fetch voc12`: paths of the fetched data and weights\n"
        + yaml.safe_dump(overlay(dest), sort_keys=False),
    )
    if not (dest / DEEPLAB_CONVERTED).exists():
        log.warning(
            "%s is not there yet: convert %s with deeplab-pytorch's convert.py "
            "(https://github.com/kazuto1011/deeplab-pytorch, `python convert.py --dataset coco`) and put "
            "the .pth there, or set segmentation.pretrained",
            dest / DEEPLAB_CONVERTED,
            dest / "deeplab_init/init.caffemodel",
        )
    log.info("wrote %s: snakemake --configfile config/voc12.yaml %s ...", path, path)
    return path
