"""Download and check the data and weights of a real-data run: `conta fetch voc12 | coco14`.

    conta fetch voc12 [--dest resources] [--base-url URL] [--offline] [--only voc,sbd ...]
                      [--checksum FILE=ALGO:HEX ...] [--verify] [--overlay PATH]

What `voc12` fetches into DEST (about 3.4 GB of archives, 5 GB extracted):

| item | source | checksum |
| --- | --- | --- |
| `voc` | PASCAL VOC 2012 trainval, host.robots.ox.ac.uk | md5 published with the dataset (as torchvision's VOCSegmentation checks it) |
| `sbd` | SBD `benchmark.tgz` (Hariharan et al., ICCV 2011), www2.eecs.berkeley.edu | md5 as torchvision's SBDataset checks it |
| `resnet50`, `resnet101` | torchvision ImageNet weights, download.pytorch.org | the sha256 prefix in the file name (torchvision's own check) |
| `resnet38` (only with `--only resnet38`, for method seam) | ResNet-38 "model A1" MXNet weights `ilsvrc-cls_rna-a1_cls1000_ep-0001.params` (itijyou/ademxapp); no stable public URL: `--base-url` of a mirror or the file placed in DEST | md5 `ff21f45d6bf03284100dcbec571edfad` (ademxapp's models/checksum.md5); converted without MXNet into DEST/resnet38_imagenet.pth (`seam.pretrained` in the overlay) |
| `deeplab_init` | DeepLab-v2's released `prototxt_and_model.zip` (liangchiehchen.com), holding `init.caffemodel` (the COCO-pretrained init) | none published: its sha256 is recorded in DEST/checksums.json after the first download that is a zip and extracts, and checked against that record afterwards |

`coco14` fetches COCO 2014 (images.cocodataset.org: `train2014.zip`, `val2014.zip`,
`annotations_trainval2014.zip`, about 20 GB) into DEST/coco2014/ with the md5s that are widely
used for them (Salesforce LAVIS's COCO builders, pystiche, PaddleDetection's download
tables; cocodataset.org publishes none), plus the same weights.

After the downloads, DEST/deeplab_init/init.caffemodel is converted into
DEST/deeplabv1_resnet101-coco.pth (conta_core.data.caffemodel: caffe's protobuf read
directly, deeplab-pytorch's key names), the `segmentation.pretrained` of the VOC/COCO run.
When that file is there, `deeplab_init` and `resnet101` are not needed (the overlay names
neither) and are skipped unless named with --only.

Then it writes DEST/<dataset>_paths.yaml (or --overlay PATH), an overlay with
`dataset.root`, `dataset.sbd_root` and every `pretrained:` path of what exists, merged into
that file's earlier content, so the run needs no hand edits:

    snakemake round3 --configfile config/voc12.yaml resources/voc12_paths.yaml --profile profiles/slurm

Checks. [OURS] Every file is checked before it takes its final name: the download goes to
DEST/.partial/<file>, its hash and its kind (zip / tar / gzip / torch magic bytes, so an HTML
login page is refused) are checked there, and only then is it renamed into place (a rename
on the same file system: no second copy). What is already in place is checked too: by a
stamp (size, mtime and the hash it had) in DEST/.conta-fetch-stamps.json, which a changed
file fails, and with --verify by a full re-hash. A file that fails is named with what to do
(a file the tool did not create is never deleted). Checksums: `--checksum FILE=md5:HEX`
(or sha256:HEX) > an entry of DEST/checksums.json (a lab mirror with re-packed archives: put
`{"VOCtrainval_11-May-2012.tar": "md5:..."}` there) > the built-in one.

Download. [OURS] No pooch (it moves a file to its final name before its hash check and
leaves temporary files in DEST): requests for http(s), plain reads for file:// mirrors. A
partial download is resumed with an HTTP Range request. Before a download and before an
extraction the free space of DEST is compared with what will be written. On a terminal a
progress bar; otherwise (a batch log) a line every CONTA_PROGRESS_SECONDS (30) seconds with
bytes, rate and ETA. Files follow the umask.

Extraction. Into DEST/.partial/extract-<item>/, then only what is missing in DEST is moved in
(a user's VOCdevkit/VOC2007 stays; a symlinked VOCdevkit is followed); members outside the
target are refused (tarfile's "data" filter). DEST/.partial holds only the tool's own files;
leftovers of a killed run are removed on the next run (partial downloads are kept to resume).

Failures raise FetchError with one line: what failed, the file and URL, and what to do.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import tarfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import yaml

log = logging.getLogger("conta.fetch")

CHUNK = 1 << 20  # hashing
NET_CHUNK = 1 << 16  # writes to the partial file: what was received before a drop is kept
TIMEOUT_S = 60  # per read: a stalled server fails instead of hanging a cluster job
PARTIAL_DIR = ".partial"
CHECKSUMS_FILE = "checksums.json"
STAMPS_FILE = ".conta-fetch-stamps.json"
DEEPLAB_CONVERTED = "deeplabv1_resnet101-coco.pth"
DEEPLAB_CAFFEMODEL = "deeplab_init/init.caffemodel"
FREE_MARGIN = 16 << 20  # bytes kept free besides what a download / extraction writes
HASH_KINDS = ("md5", "sha256", "sha256-prefix")


def progress_seconds() -> float:
    return float(os.environ.get("CONTA_PROGRESS_SECONDS", "30"))


class FetchError(RuntimeError):
    """A download, checksum, extraction or layout problem; the message names file and URL and
    says what to do."""


@dataclass(frozen=True)
class Item:
    """One file to fetch: name (CLI key), url, file name, hash ("md5:..", "sha256:..",
    "sha256-prefix:.." or None = record on first use), kind (zip | tar | gzip | torch, checked
    by magic bytes), extract_to (folder that must exist after extraction, relative to DEST;
    None = no archive), layout (what must exist inside it), extract_into (the folder of DEST
    the archive's members are relative to), needed_unless (a file of DEST whose presence makes
    the item unnecessary)."""

    name: str
    url: str
    fname: str
    known_hash: str | None
    kind: str
    extract_to: str | None = None
    layout: tuple[str, ...] = ()
    extract_into: str = ""
    needed_unless: str | None = None
    opt_in: bool = False  # fetched only when named with --only


RESNET38_PARAMS = "ilsvrc-cls_rna-a1_cls1000_ep-0001.params"
RESNET38_CONVERTED = "resnet38_imagenet.pth"
WEIGHT_ITEMS = (
    Item("resnet50", "https://download.pytorch.org/models/resnet50-19c8e357.pth", "resnet50-19c8e357.pth",
         "sha256-prefix:19c8e357", "torch"),
    Item("resnet101", "https://download.pytorch.org/models/resnet101-5d3b4d8f.pth", "resnet101-5d3b4d8f.pth",
         "sha256-prefix:5d3b4d8f", "torch", needed_unless=DEEPLAB_CONVERTED),
    Item("deeplab_init", "http://liangchiehchen.com/projects/released/deeplab_aspp_resnet101/prototxt_and_model.zip",
         "prototxt_and_model.zip", None, "zip", "deeplab_init", ("init.caffemodel",), "deeplab_init",
         DEEPLAB_CONVERTED),
    # ResNet-38 "model A1" (Wu et al., itijyou/ademxapp) for method seam: no stable public URL
    # (the links have moved before), so --base-url or the file placed in DEST; md5 of ademxapp's
    # models/checksum.md5. Converted to DEST/resnet38_imagenet.pth (conta_core.data.mxnet_params).
    Item("resnet38", "", RESNET38_PARAMS, "md5:ff21f45d6bf03284100dcbec571edfad", "mxnet",
         needed_unless=RESNET38_CONVERTED, opt_in=True),
)  # fmt: skip
VOC12_ITEMS = (
    Item("voc", "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
         "VOCtrainval_11-May-2012.tar", "md5:6cd6e144f989b92b3379bac3b3de84fd", "tar", "VOCdevkit/VOC2012",
         ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation/train.txt", "ImageSets/Segmentation/val.txt")),
    Item("sbd", "http://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz",
         "benchmark.tgz", "md5:82b4d87ceb2ed10f6038a1cba92111cb", "gzip", "benchmark_RELEASE/dataset",
         ("cls", "img", "train.txt", "val.txt")),
    *WEIGHT_ITEMS,
)  # fmt: skip
COCO14_ITEMS = (
    Item("coco_train", "http://images.cocodataset.org/zips/train2014.zip", "train2014.zip",
         "md5:0da8c0bd3d6becc4dcb32757491aca88", "zip", "coco2014/train2014", (), "coco2014"),
    Item("coco_val", "http://images.cocodataset.org/zips/val2014.zip", "val2014.zip",
         "md5:a3d79f5ed8d289b7a7554ce06a5782b3", "zip", "coco2014/val2014", (), "coco2014"),
    Item("coco_annotations", "http://images.cocodataset.org/annotations/annotations_trainval2014.zip",
         "annotations_trainval2014.zip", "md5:0a379cfc70b0e71301e0f377548639bd", "zip", "coco2014/annotations",
         ("instances_train2014.json", "instances_val2014.json"), "coco2014"),
    *WEIGHT_ITEMS,
)  # fmt: skip
DATASETS = {"voc12": VOC12_ITEMS, "coco14": COCO14_ITEMS}
CONFIGFILES = {"voc12": "config/voc12.yaml", "coco14": "config/voc12.yaml config/coco14.yaml"}


def overlay_file(dataset: str) -> str:
    return f"{dataset}_paths.yaml"


OVERLAY_FILE = overlay_file("voc12")


# ------------------------------------------------------------------------------ small helpers


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def _os_error(e: OSError, what: str, where: Path) -> FetchError:
    """One line for a write failure: disk full, read-only or no permission."""
    if e.errno == errno.ENOSPC:
        return FetchError(f"{what}: disk full in {where}; free space there or use --dest on a larger disk")
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return FetchError(
            f"{what}: cannot write into {where} ({e.strerror}); use a writable --dest"
            + (" or --overlay PATH" if "overlay" in what else "")
        )
    return FetchError(f"{what}: {e.strerror or e} ({where})")


def _write_dest(dest: Path, path: Path, text: str) -> None:
    """Atomic write of a small file of DEST: the temporary name lives in DEST/.partial (cleaned
    on the next run), so a kill -9 leaves nothing beside the files."""
    tmp_dir = dest / PARTIAL_DIR
    tmp_dir.mkdir(exist_ok=True)
    tmp = tmp_dir / f"{path.name}.{os.getpid()}.tmp"
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_any(path: Path, text: str, dest: Path) -> None:
    if path.parent.resolve() == dest.resolve():
        _write_dest(dest, path, text)
    else:
        from conta_core.infra.fileio import write_text

        write_text(path, text)


def _clean_leftovers(dest: Path) -> None:
    """Remove what a killed earlier run left in DEST/.partial: temporary writes and extraction
    folders (never a partial download, which is resumed)."""
    part = dest / PARTIAL_DIR
    if not part.is_dir():
        return
    for p in part.iterdir():
        try:
            if p.name.endswith(".tmp"):
                p.unlink()
            elif p.name.startswith("extract-") and p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
        except OSError:
            pass  # a read-only DEST: nothing to clean there


def parse_checksums(entries: list[str] | None) -> dict[str, str]:
    """--checksum FILE=ALGO:HEX entries -> {file: "algo:hex"}; FetchError on a bad entry."""
    out = {}
    for e in entries or []:
        name, sep, spec = e.partition("=")
        kind, sep2, hexd = spec.partition(":")
        if not (sep and sep2 and name and kind in HASH_KINDS and hexd) or any(
            c not in "0123456789abcdef" for c in hexd.lower()
        ):
            raise FetchError(f"--checksum {e!r}: expected FILE=ALGO:HEX with ALGO one of {', '.join(HASH_KINDS)}")
        out[name] = f"{kind}:{hexd.lower()}"
    return out


def _read_json(path: Path, what: str) -> dict:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise FetchError(f"{path}: cannot read {what} ({e}); fix or delete it") from e
    if not isinstance(data, dict):
        raise FetchError(f"{path}: {what} must be a JSON object of file name -> checksum")
    return data


# ------------------------------------------------------------------------------ checks


def file_hash(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def check_kind(path: Path, kind: str, label: str) -> None:
    """FetchError unless the file's first bytes are those of `kind` (an HTML page, an empty
    file or another format is refused before its hash is trusted or recorded)."""
    with open(path, "rb") as f:
        head = f.read(512)
    ok = {
        "zip": head[:4] in (b"PK\x03\x04", b"PK\x05\x06"),
        "gzip": head[:2] == b"\x1f\x8b",
        "tar": head[257:262] == b"ustar",
        "torch": head[:4] == b"PK\x03\x04" or head[:3] == b"\x80\x02\x8a",  # zip or legacy pickle format
        "mxnet": head[:8] == (0x112).to_bytes(8, "little"),  # MXNet's NDArray list magic
    }[kind]
    if not ok:
        what = (
            "an HTML page (a login or error page of the server?)"
            if head.lstrip()[:1] == b"<"
            else "an empty file"
            if not head
            else "another kind of file"
        )
        raise FetchError(f"{label}: is {what}, not a {kind} file")


def check_hash(path: Path, known: str | None, label: str) -> str:
    """sha256 of `path`; FetchError naming `label` when it does not match `known`."""
    sha256 = file_hash(path, "sha256")
    if known is None:
        return sha256
    kind, _, want = known.partition(":")
    got = sha256 if kind.startswith("sha256") else file_hash(path, kind)
    ok = got.startswith(want) if kind == "sha256-prefix" else got == want
    if not ok:
        raise FetchError(
            f"{label}: {kind} {got} does not match the expected {want} "
            "(a corrupt or truncated download, or another file at that URL)"
        )
    return sha256


class Checker:
    """Checks files of DEST against their expected hash, remembering good ones in the stamp
    sidecar (size, mtime_ns, sha256, the hash spec checked) so that later runs re-hash only
    files that changed (all of them with `full`)."""

    def __init__(self, dest: Path, full: bool) -> None:
        self.dest, self.full = dest, full
        self.path = dest / STAMPS_FILE
        self.stamps = _read_json(self.path, "the stamp file") if self.path.exists() else {}

    def _key(self, path: Path) -> dict:
        st = path.stat()
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def check(self, path: Path, known: str | None, kind: str, label: str) -> str:
        """sha256 of `path` (FetchError when kind or hash fail)."""
        stamp = self.stamps.get(path.name)
        if not self.full and stamp and {k: stamp.get(k) for k in ("size", "mtime_ns")} == self._key(path):
            if stamp.get("checked") == known or known is None:
                return stamp["sha256"]
        check_kind(path, kind, label)
        sha256 = check_hash(path, known, label)
        self.record(path, sha256, known)
        return sha256

    def record(self, path: Path, sha256: str, known: str | None) -> None:
        self.stamps[path.name] = {**self._key(path), "sha256": sha256, "checked": known}
        try:
            _write_dest(self.dest, self.path, json.dumps(self.stamps, indent=1) + "\n")
        except OSError:
            log.debug("cannot write %s (read-only DEST): files are re-hashed next time", self.path)

    def forget(self, name: str) -> None:
        self.stamps.pop(name, None)


# ------------------------------------------------------------------------------ download


class Progress:
    """A tqdm bar on a terminal; otherwise a log line every CONTA_PROGRESS_SECONDS with the
    bytes received, the rate and the ETA."""

    def __init__(self, name: str, total: int | None, initial: int, tty: bool) -> None:
        self.name, self.total, self.done, self.start_bytes = name, total, initial, initial
        self.t0 = self.last = time.monotonic()
        self.every = progress_seconds()
        self.bar = None
        if tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="B", unit_scale=True, desc=name, leave=False)

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            log.info("%s", self.line(now))

    def line(self, now: float) -> str:
        rate = (self.done - self.start_bytes) / max(now - self.t0, 1e-9)
        if self.total:
            left = (self.total - self.done) / rate if rate > 0 else float("inf")
            eta = time.strftime("%H:%M:%S", time.gmtime(left)) if left != float("inf") else "?"
            return (
                f"{self.name}: {_mb(self.done)} of {_mb(self.total)} ({100 * self.done / self.total:.0f}%), "
                f"{_mb(rate)}/s, ETA {eta}"
            )
        return f"{self.name}: {_mb(self.done)}, {_mb(rate)}/s"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _check_space(where: Path, need: int, what: str) -> None:
    free = shutil.disk_usage(where).free
    if need + FREE_MARGIN > free:
        raise FetchError(
            f"{what}: needs {_mb(need)} free in {where}, only {_mb(free)} are free; "
            "free space there or use --dest on a larger disk"
        )


def _kept(partial: Path) -> str:
    size = partial.stat().st_size if partial.exists() else 0
    if size:
        return f"the partial file {partial} ({_mb(size)}) is kept and the next run resumes it"
    partial.unlink(missing_ok=True)
    return "nothing was downloaded or kept"


def _net_cause(e: Exception) -> str:
    import requests

    text = str(e)
    if isinstance(e, requests.HTTPError) and e.response is not None:
        r = e.response
        return f"the server answered {r.status_code} {r.reason} (a wrong URL or --base-url?)"
    if isinstance(e, requests.Timeout):
        return f"no data for {TIMEOUT_S} s (the server stalled)"
    if any(s in text for s in ("NameResolution", "Name or service not known", "getaddrinfo", "nodename nor")):
        return "cannot resolve the host name (no network or DNS on this machine, or a typo in --base-url?)"
    if "Connection refused" in text or "ConnectionRefused" in text:
        return "connection refused (the server is down, or a wrong host/port in --base-url?)"
    if isinstance(e, requests.exceptions.ChunkedEncodingError) or "IncompleteRead" in text:
        return "the connection dropped"
    return f"the connection failed ({text.splitlines()[0][:200] if text else type(e).__name__})"


def _stream(chunks, partial: Path, mode: str, prog: Progress) -> None:
    with open(partial, mode) as f:
        for block in chunks:
            f.write(block)
            prog.update(len(block))


def download_partial(url: str, partial: Path, tty: bool) -> None:
    """Download (or continue) `url` into `partial`; FetchError with the cause and whether the
    partial file is kept. http(s) through requests with Range; file:// read directly."""
    partial.parent.mkdir(parents=True, exist_ok=True)
    have = partial.stat().st_size if partial.exists() else 0
    label = f"{partial.name} from {url}"
    if urlparse(url).scheme == "file":
        src = Path(url2pathname(urlparse(url).path))
        if not src.is_file():
            raise FetchError(f"{label}: no such file on the mirror; nothing was downloaded or kept")
        total = src.stat().st_size
        have = have if have <= total else 0
        _check_space(partial.parent, total - have, label)
        prog = Progress(partial.name, total, have, tty)
        with open(src, "rb") as f:
            f.seek(have)
            _stream(iter(lambda: f.read(NET_CHUNK), b""), partial, "ab" if have else "wb", prog)
        prog.close()
        return
    import requests

    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        with requests.get(url, headers=headers, stream=True, timeout=TIMEOUT_S) as r:
            if r.status_code == 416 and have:  # the partial file is already complete
                return
            r.raise_for_status()
            if have and r.status_code != 206:  # no range support: start again
                have = 0
            length = r.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            if length is not None:
                _check_space(partial.parent, int(length), label)
            if have:
                log.info("%s: resuming at %s", partial.name, _mb(have))
            prog = Progress(partial.name, total, have, tty)
            _stream(r.iter_content(NET_CHUNK), partial, "ab" if have else "wb", prog)
            prog.close()
    except requests.RequestException as e:
        raise FetchError(f"{label}: download failed: {_net_cause(e)}; {_kept(partial)}") from e
    size = partial.stat().st_size
    if total is not None and size != total:
        raise FetchError(f"{label}: got {size} of {total} bytes (the connection dropped); {_kept(partial)}")


def download(item: Item, dest: Path, url: str, known: str | None, checker: Checker, tty: bool) -> Path:
    """DEST/<fname>: downloaded into DEST/.partial, checked there (kind and hash) and only then
    renamed to its final name. A partial that fails its check is deleted."""
    partial = dest / PARTIAL_DIR / item.fname
    label = f"{item.fname} from {url}"
    try:
        download_partial(url, partial, tty)
    except OSError as e:
        raise _os_error(e, f"{label}: download", dest) from e
    try:
        check_kind(partial, item.kind, label)
        sha256 = check_hash(partial, known, label)
    except FetchError:
        partial.unlink()  # the tool's own partial: never resumed, never moved into place
        raise
    target = dest / item.fname
    os.replace(partial, target)
    checker.record(target, sha256, known)
    log.info("%s: ok (%s)", item.fname, known or f"sha256:{sha256}")
    return target


# ------------------------------------------------------------------------------ extraction


def _members_size(archive: Path) -> int:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            return sum(i.file_size for i in z.infolist())
    with tarfile.open(archive) as t:
        return sum(m.size for m in t.getmembers())


def _merge_missing(src: Path, dst: Path) -> tuple[int, int]:
    """Move every entry of `src` that `dst` lacks into `dst` (following a symlinked folder of
    dst); what dst already has stays untouched. Returns (moved, kept)."""
    moved = kept = 0
    for entry in sorted(src.iterdir()):
        target = dst / entry.name
        if not os.path.lexists(target):
            try:
                os.replace(entry, target)
            except OSError as e:
                if e.errno != errno.EXDEV:
                    raise
                shutil.move(str(entry), str(target))  # a symlinked folder on another file system
            moved += 1
        elif entry.is_dir() and not entry.is_symlink() and target.is_dir():
            m, k = _merge_missing(entry, target)
            moved, kept = moved + m, kept + k
        else:
            kept += 1
    return moved, kept


def extract(archive: Path, dest: Path, item: Item) -> None:
    """Extract `archive` into DEST/.partial/extract-<item>/<extract_into>, then move in only
    what DEST lacks. Members outside the target are refused; nothing of DEST is deleted."""
    tmp = dest / PARTIAL_DIR / f"extract-{item.name}"
    shutil.rmtree(tmp, ignore_errors=True)  # the tool's own folder
    try:
        _check_space(dest, _members_size(archive), f"extracting {archive}")
        (tmp / item.extract_into).mkdir(parents=True)
        if item.kind == "zip":
            with zipfile.ZipFile(archive) as z:
                for m in z.namelist():
                    if Path(m).is_absolute() or ".." in Path(m).parts:
                        raise FetchError(f"{archive}: member {m!r} points outside the target")
                z.extractall(tmp / item.extract_into)
        else:
            with tarfile.open(archive) as t:
                t.extractall(tmp / item.extract_into, filter="data")
        if not (tmp / item.extract_to).is_dir():
            raise FetchError(f"{archive}: holds no {item.extract_to}/ (not the expected archive)")
        moved, kept = _merge_missing(tmp, dest)
        if kept:
            log.info("%s: %d entries already in %s were kept as they are", archive.name, kept, dest)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as e:
        raise FetchError(f"{archive}: cannot extract ({e}); delete it to download it again") from e
    except OSError as e:
        raise _os_error(e, f"extracting {archive}", dest) from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_layout(dest: Path, item: Item) -> list[str]:
    """What is missing of `item` under DEST (empty when complete)."""
    if item.extract_to is None:
        return [] if (dest / item.fname).is_file() else [str(dest / item.fname)]
    root = dest / item.extract_to
    if not root.is_dir():
        return [str(root)]
    return [str(root / rel) for rel in item.layout if not (root / rel).exists()]


# ------------------------------------------------------------------------------ the command


def overlay(dataset: str, dest: Path) -> dict:
    """The config overlay of what exists in DEST: dataset paths and `pretrained:` weights."""
    d = dest.resolve()
    have = {i.name for i in DATASETS[dataset] if not check_layout(dest, i)}
    out: dict = {}
    if dataset == "voc12":
        ds = {}
        if "voc" in have:
            ds["root"] = str(d / "VOCdevkit/VOC2012")
        if "sbd" in have:
            ds["sbd_root"] = str(d / "benchmark_RELEASE/dataset")
        if ds:
            out["dataset"] = ds
    elif {"coco_train", "coco_val", "coco_annotations"} <= have:
        out["dataset"] = {"kind": "coco14", "root": str(d / "coco2014"), "sbd_root": None}
    if "resnet50" in have:
        for section in ("classifier", "irn", "amn"):
            out[section] = {"pretrained": str(d / "resnet50-19c8e357.pth")}
    if (dest / DEEPLAB_CONVERTED).is_file():
        out["segmentation"] = {"pretrained": str(d / DEEPLAB_CONVERTED)}
    if (dest / RESNET38_CONVERTED).is_file():
        out["seam"] = {"pretrained": str(d / RESNET38_CONVERTED)}
    return out


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def write_overlay(dataset: str, dest: Path, path: Path) -> Path:
    """Merge the overlay of what exists into `path` (its other keys are kept)."""
    old = {}
    if path.exists():
        try:
            old = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise FetchError(f"{path}: cannot read the existing overlay ({e}); fix or delete it") from e
    text = f"# written by `conta fetch {dataset}`: paths of the fetched data and weights\n" + yaml.safe_dump(
        _merge(old, overlay(dataset, dest)), sort_keys=False
    )
    try:
        _write_any(path, text, dest)
    except OSError as e:
        raise _os_error(e, f"writing the overlay {path}", path.parent) from e
    return path


def convert_init(dest: Path) -> None:
    """DEST/deeplab_init/init.caffemodel -> DEST/deeplabv1_resnet101-coco.pth."""
    from conta_core.data.caffemodel import CaffeModelError, convert_caffemodel

    src, dst = dest / DEEPLAB_CAFFEMODEL, dest / DEEPLAB_CONVERTED
    log.info("converting %s -> %s", src, dst)
    try:
        state = convert_caffemodel(src, dst)
    except CaffeModelError as e:
        raise FetchError(f"{e}; delete {dest / 'prototxt_and_model.zip'} and {src.parent} to download it again") from e
    except OSError as e:
        raise _os_error(e, f"converting {src}", dest) from e
    log.info("%s: %d tensors (caffe-layout ResNet-101, segmentation.resnet_style: caffe)", dst.name, len(state))


def convert_resnet38_params(dest: Path) -> None:
    """DEST/ilsvrc-cls_rna-a1_cls1000_ep-0001.params -> DEST/resnet38_imagenet.pth (SEAM's key names)."""
    from conta_core.data.mxnet_params import ParamsFormatError, convert_file

    src, dst = dest / RESNET38_PARAMS, dest / RESNET38_CONVERTED
    log.info("converting %s -> %s", src, dst)
    try:
        convert_file(src, dst)
    except ParamsFormatError as e:
        raise FetchError(f"{e}; delete {src} to download it again") from e
    except OSError as e:
        raise _os_error(e, f"converting {src}", dest) from e


def _ensure(item, dest, base_url, offline, known, checker, records, tty) -> None:
    """Make `item` complete in DEST (check what is there, download, extract)."""
    url = f"{base_url.rstrip('/')}/{item.fname}" if base_url else item.url
    archive = dest / item.fname
    missing = check_layout(dest, item)
    if item.extract_to is not None and not missing:
        if checker.full and archive.is_file():
            checker.check(archive, known, item.kind, f"{archive} (in place)")
        log.info("%s: already in place", item.name)
        return
    downloaded = False
    if archive.is_file():
        try:
            checker.check(archive, known, item.kind, f"{archive} (in place)")
        except FetchError as e:
            raise FetchError(
                f"{e}; it was not downloaded by this run: delete or replace it (or give its checksum with "
                f"--checksum {item.fname}=md5:HEX) and run again"
            ) from None
        log.info("%s: %s in place and checked", item.name, item.fname)
    elif offline:
        raise FetchError(
            f"{item.name}: missing {', '.join(missing)} (--offline: nothing is downloaded; put {item.fname} "
            f"from {item.url or 'a mirror'}, or the extracted folder, into {dest})"
        )
    elif not url:
        raise FetchError(
            f"{item.name}: {item.fname} has no stable public URL; put it into {dest} or give --base-url of a "
            "mirror that holds it"
        )
    else:
        download(item, dest, url, known, checker, tty)
        downloaded = True
    if item.extract_to is None:
        return
    try:
        extract(archive, dest, item)
        still = check_layout(dest, item)
        if still:
            raise FetchError(f"{item.name}: after extracting {archive.name}, missing {', '.join(still)}")
    except FetchError:
        if downloaded and known is None:
            archive.unlink()  # downloaded by this run with no checksum: never left to be trusted
            checker.forget(archive.name)
        raise
    if known is None:  # recorded only now: a file that is the expected kind and extracts
        sha256 = checker.check(archive, None, item.kind, str(archive))
        records[item.fname] = f"sha256:{sha256}"
        try:
            _write_dest(dest, dest / CHECKSUMS_FILE, json.dumps(records, indent=1) + "\n")
            log.info("%s: no published checksum; recorded sha256 %s in %s", item.fname, sha256, CHECKSUMS_FILE)
        except OSError as e:
            log.warning("%s: cannot record its sha256 in %s (%s)", item.fname, dest / CHECKSUMS_FILE, e.strerror)


def fetch(
    dataset: str,
    dest: Path,
    base_url: str | None = None,
    offline: bool = False,
    only: list[str] | None = None,
    progressbar: bool = True,
    checksums: list[str] | None = None,
    verify: bool = False,
    overlay_path: Path | None = None,
) -> Path:
    """Fetch (or, offline, check and extract) the items of `dataset`, convert DeepLab's init,
    write the overlay of what exists; return its path. FetchError says what is missing or bad."""
    if dataset not in DATASETS:
        raise FetchError(f"unknown dataset {dataset!r} (known: {', '.join(DATASETS)})")
    all_items = DATASETS[dataset]
    names = [i.name for i in all_items]
    unknown = [n for n in only or [] if n not in names]
    if unknown:
        raise FetchError(f"--only {','.join(unknown)}: unknown item (known: {', '.join(names)})")
    items = [i for i in all_items if (i.name in only if only else not i.opt_in)]
    user = parse_checksums(checksums)
    dest = Path(dest)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _os_error(e, f"creating --dest {dest}", dest.parent) from e
    _clean_leftovers(dest)
    records = _read_json(dest / CHECKSUMS_FILE, "the checksum file")
    checker = Checker(dest, verify)
    problems = []
    for item in items:
        if item.needed_unless and (dest / item.needed_unless).is_file() and not only:
            log.info("%s: not needed (%s is there)", item.name, item.needed_unless)
            continue
        known = user.get(item.fname) or records.get(item.fname) or item.known_hash
        try:
            _ensure(item, dest, base_url, offline, known, checker, records, progressbar)
        except FetchError as e:
            if not offline:
                raise
            problems.append(str(e))
    if problems:
        raise FetchError("; ".join(problems))
    if (dest / DEEPLAB_CAFFEMODEL).is_file() and not (dest / DEEPLAB_CONVERTED).is_file():
        convert_init(dest)
    if (dest / RESNET38_PARAMS).is_file() and not (dest / RESNET38_CONVERTED).is_file():
        convert_resnet38_params(dest)
    path = write_overlay(dataset, dest, Path(overlay_path) if overlay_path else dest / overlay_file(dataset))
    log.info(
        "wrote %s; next: snakemake round3 --configfile %s %s --profile profiles/slurm",
        path,
        CONFIGFILES[dataset],
        path,
    )
    return path
