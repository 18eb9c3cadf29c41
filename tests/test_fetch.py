"""`conta fetch` (conta_core.data.fetch) against a local HTTP server on 127.0.0.1 serving small
archives of the real layouts: a good download, a truncated archive, a wrong checksum, a
server that drops the connection half way (then a resume), offline use, mirrors (http and
file://), checks of what is in place, user checksums, failures of the disk and the network,
extraction next to the user's own files, the overlay and the CLI."""

from __future__ import annotations

import builtins
import dataclasses
import errno
import hashlib
import http.server
import io
import logging
import os
import shutil
import socket
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from conta_core import cli
from conta_core.data import fetch as F

REPO = Path(__file__).resolve().parents[1]


def _tar(members: dict[str, bytes], gz: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _weights(n: int) -> bytes:
    buf = io.BytesIO()
    torch.save({"w": torch.arange(n, dtype=torch.float32)}, buf)
    return buf.getvalue()


VOC = "VOCdevkit/VOC2012/"
SBD = "benchmark_RELEASE/dataset/"


def _files() -> dict[str, bytes]:
    return {
        "VOCtrainval_11-May-2012.tar": _tar({
            VOC + "JPEGImages/2007_000032.jpg": b"jpg" * 1000,
            VOC + "SegmentationClass/2007_000032.png": b"png",
            VOC + "ImageSets/Segmentation/train.txt": b"2007_000032\n",
            VOC + "ImageSets/Segmentation/val.txt": b"2007_000033\n",
        }),
        "benchmark.tgz": _tar({SBD + "cls/2008_000002.mat": b"mat", SBD + "img/2008_000002.jpg": b"j",
                               SBD + "train.txt": b"2008_000002\n", SBD + "val.txt": b"\n"}, gz=True),
        "resnet50-19c8e357.pth": _weights(1000),
        "resnet101-5d3b4d8f.pth": _weights(60000),  # 240 kB: more than one network chunk before the drop
        "prototxt_and_model.zip": _zip({"init.caffemodel": b"caffe" * 100, "deploy.prototxt": b"p"}),
        "train2014.zip": _zip({"train2014/COCO_train2014_000000000009.jpg": b"j"}),
        "val2014.zip": _zip({"val2014/COCO_val2014_000000000042.jpg": b"j"}),
        "annotations_trainval2014.zip": _zip({"annotations/instances_train2014.json": b"{}",
                                              "annotations/instances_val2014.json": b"{}"}),
    }  # fmt: skip


class Server:
    """Serves `files`; `mode[name]`: good | drop (half the body, then the connection closes) |
    bad (other bytes) | html (a login page with status 200); honours Range; records the requests."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.mode, self.requests = files, {}, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                outer.requests.append((name, self.headers.get("Range")))
                if name not in outer.files:
                    self.send_error(404)
                    return
                data = outer.files[name]
                mode = outer.mode.get(name, "good")
                if mode == "bad":
                    data = bytes(reversed(data))
                elif mode == "html":
                    data = b"<!DOCTYPE html><html><body>Please log in</body></html>"
                start = 0
                rng = self.headers.get("Range")
                if rng and mode not in ("drop", "html"):
                    start = int(rng.split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if mode == "drop":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/data"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def names(self):
        return [n for n, _ in self.requests]


def _test_items(items, md5, sha):
    out = []
    for item in items:  # the real items, with the test archives' checksums of the same kinds
        if item.opt_in:  # resnet38: tested on its own (no test archive of its kind is served)
            out.append(item)
            continue
        known = item.known_hash
        if known and known.startswith("md5:"):
            known = f"md5:{md5[item.fname]}"
        elif known and known.startswith("sha256-prefix:"):
            known = f"sha256-prefix:{sha[item.fname][:8]}"
        out.append(dataclasses.replace(item, url="http://nowhere.invalid/" + item.fname, known_hash=known))
    return tuple(out)


@pytest.fixture()
def served(monkeypatch):
    files = _files()
    md5 = {n: hashlib.md5(d).hexdigest() for n, d in files.items()}
    sha = {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}
    for ds in ("voc12", "coco14"):
        monkeypatch.setitem(F.DATASETS, ds, _test_items(F.DATASETS[ds], md5, sha))
    for var in ("NO_PROXY", "no_proxy"):  # the local server, never through a proxy of the environment
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    monkeypatch.setattr(F, "convert_init", _fake_convert)  # the real conversion: tests/test_caffemodel.py
    server = Server(files)
    yield server
    server.httpd.shutdown()


def _fake_convert(dest):
    (dest / F.DEEPLAB_CONVERTED).write_bytes(_weights(10))


def _fetch(server, dest, **kw):
    kw.setdefault("progressbar", False)
    return F.fetch(kw.pop("dataset", "voc12"), dest, **({"base_url": server.url} | kw))


# ------------------------------------------------------------------------------ the happy path


def test_good_download_extracts_checks_and_writes_the_overlay(served, tmp_path):
    dest = tmp_path / "res"
    path = _fetch(served, dest)
    assert (dest / VOC / "ImageSets/Segmentation/train.txt").read_text() == "2007_000032\n"
    assert (dest / SBD / "cls/2008_000002.mat").exists()
    assert (dest / "deeplab_init/init.caffemodel").exists()
    over = yaml.safe_load(path.read_text())
    assert over["dataset"]["root"] == str((dest / "VOCdevkit/VOC2012").resolve())
    assert over["classifier"]["pretrained"].endswith("resnet50-19c8e357.pth")
    assert over["segmentation"]["pretrained"] == str((dest / F.DEEPLAB_CONVERTED).resolve())
    records = yaml.safe_load((dest / F.CHECKSUMS_FILE).read_text())
    assert records["prototxt_and_model.zip"].startswith("sha256:")  # recorded on first use
    assert not list((dest / F.PARTIAL_DIR).iterdir())
    n = len(served.requests)
    _fetch(served, dest)  # all in place: nothing fetched
    assert len(served.requests) == n


def test_wrong_checksum_leaves_no_file(served, tmp_path):
    served.mode["benchmark.tgz"] = "bad"
    with pytest.raises(F.FetchError, match=r"benchmark\.tgz from http://127\.0\.0\.1.*(md5|hash|gzip)"):
        _fetch(served, tmp_path, only=["sbd"])
    assert not (tmp_path / "benchmark.tgz").exists()
    assert not (tmp_path / "benchmark_RELEASE").exists()
    assert not (tmp_path / F.PARTIAL_DIR / "benchmark.tgz").exists()  # a bad partial is not resumed


def test_truncated_archive_fails_its_checksum(served, tmp_path):
    full = served.files["VOCtrainval_11-May-2012.tar"]
    served.files["VOCtrainval_11-May-2012.tar"] = full[: len(full) // 2]  # served as a complete file
    with pytest.raises(F.FetchError, match=r"VOCtrainval_11-May-2012\.tar"):
        _fetch(served, tmp_path, only=["voc"])
    assert not (tmp_path / "VOCtrainval_11-May-2012.tar").exists() and not (tmp_path / "VOCdevkit").exists()


def test_sha256_prefix_mismatch_removes_the_file(served, tmp_path):
    served.files["resnet50-19c8e357.pth"] = _weights(999)  # a torch file, but another one
    with pytest.raises(F.FetchError, match="sha256-prefix"):
        _fetch(served, tmp_path, only=["resnet50"])
    assert not (tmp_path / "resnet50-19c8e357.pth").exists()


def test_dropped_connection_keeps_the_partial_and_resumes(served, tmp_path):
    name = "resnet101-5d3b4d8f.pth"
    served.mode[name] = "drop"
    with pytest.raises(F.FetchError, match=r"resnet101-5d3b4d8f\.pth from .*dropped.*is kept.*resumes"):
        _fetch(served, tmp_path, only=["resnet101"])
    partial = tmp_path / F.PARTIAL_DIR / name
    assert not (tmp_path / name).exists()
    assert 0 < partial.stat().st_size < len(served.files[name])
    served.mode[name] = "good"
    _fetch(served, tmp_path, only=["resnet101"])
    assert (tmp_path / name).read_bytes() == served.files[name]
    kept = int(served.requests[-1][1].removeprefix("bytes=").rstrip("-"))
    assert 0 < kept <= len(served.files[name]) // 2  # resumed where the dropped download stopped
    assert not partial.exists()


def test_recorded_checksum_is_checked_on_later_downloads(served, tmp_path):
    _fetch(served, tmp_path, only=["deeplab_init"])
    (tmp_path / "prototxt_and_model.zip").unlink()
    shutil.rmtree(tmp_path / "deeplab_init")
    served.files["prototxt_and_model.zip"] = _zip({"init.caffemodel": b"other", "deploy.prototxt": b"p"})
    with pytest.raises(F.FetchError, match="prototxt_and_model.zip.*does not match"):
        _fetch(served, tmp_path, only=["deeplab_init"])


# ------------------------------------------------------------------------------ item 1: offline


def test_offline_extracts_archives_already_in_dest(served, tmp_path):
    for name in ("VOCtrainval_11-May-2012.tar", "benchmark.tgz"):
        (tmp_path / name).write_bytes(served.files[name])
    F.fetch("voc12", tmp_path, offline=True, only=["voc", "sbd"], progressbar=False)
    assert served.requests == []
    assert (tmp_path / VOC / "ImageSets/Segmentation/val.txt").exists()
    assert (tmp_path / SBD / "train.txt").exists()


def test_offline_names_what_is_missing(served, tmp_path):
    with pytest.raises(F.FetchError, match=r"--offline.*VOCtrainval_11-May-2012\.tar"):
        F.fetch("voc12", tmp_path, offline=True, only=["voc"], progressbar=False)
    assert served.requests == []


# ------------------------------------------------------------------------------ item 2: user checksums


def test_user_checksums_override_the_built_in_ones(served, tmp_path):
    repacked = _tar({VOC + rel: b"x" for rel in ("JPEGImages/a.jpg", "SegmentationClass/a.png",
                                                  "ImageSets/Segmentation/train.txt",
                                                  "ImageSets/Segmentation/val.txt")})  # fmt: skip
    served.files["VOCtrainval_11-May-2012.tar"] = repacked  # a lab mirror's re-packed archive
    with pytest.raises(F.FetchError, match="md5"):
        _fetch(served, tmp_path / "a", only=["voc"])
    md5 = hashlib.md5(repacked).hexdigest()
    _fetch(served, tmp_path / "a", only=["voc"], checksums=[f"VOCtrainval_11-May-2012.tar=md5:{md5}"])
    assert (tmp_path / "a" / VOC / "JPEGImages/a.jpg").exists()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / F.CHECKSUMS_FILE).write_text(f'{{"VOCtrainval_11-May-2012.tar": "md5:{md5}"}}')
    _fetch(served, tmp_path / "b", only=["voc"])  # the checksums.json entry wins over the built-in md5
    assert (tmp_path / "b" / VOC / "JPEGImages/a.jpg").exists()
    with pytest.raises(F.FetchError, match="--checksum"):
        _fetch(served, tmp_path / "c", only=["voc"], checksums=["VOCtrainval_11-May-2012.tar=crc:12"])


# ------------------------------------------------------------------------------ items 3, 4: checks


def test_download_is_checked_before_it_takes_its_final_name(served, tmp_path, monkeypatch):
    def killed(path, known, label):  # SIGTERM while the hash is computed
        assert not (tmp_path / "resnet50-19c8e357.pth").exists()
        raise KeyboardInterrupt

    monkeypatch.setattr(F, "check_hash", killed)
    with pytest.raises(KeyboardInterrupt):
        _fetch(served, tmp_path, only=["resnet50"])
    assert not (tmp_path / "resnet50-19c8e357.pth").exists()  # never a file to be trusted later


@pytest.mark.parametrize("content", ["zeros", "other_weights"])
def test_a_wrong_file_in_place_is_rejected(served, tmp_path, content):
    bad = _weights(7) if content == "other_weights" else b"\x00" * 4000  # random bytes / another torch file
    (tmp_path / "resnet50-19c8e357.pth").write_bytes(bad)
    for offline in (True, False):
        with pytest.raises(F.FetchError, match=r"resnet50-19c8e357\.pth \(in place\).*delete or replace it"):
            _fetch(served, tmp_path, only=["resnet50"], offline=offline)
    assert (tmp_path / "resnet50-19c8e357.pth").read_bytes() == bad  # not the tool's file: kept
    assert served.requests == []


def test_files_in_place_are_stamped_and_verify_rehashes(served, tmp_path, monkeypatch):
    _fetch(served, tmp_path, only=["resnet50"])
    target = tmp_path / "resnet50-19c8e357.pth"
    calls = []
    real = F.check_hash
    monkeypatch.setattr(F, "check_hash", lambda *a: calls.append(a[0]) or real(*a))
    _fetch(served, tmp_path, only=["resnet50"], offline=True)
    assert calls == []  # unchanged since its stamp: not re-hashed
    st = target.stat()
    data = bytearray(target.read_bytes())
    data[-1] ^= 1
    target.write_bytes(bytes(data))  # corrupted in place, size and mtime kept
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    _fetch(served, tmp_path, only=["resnet50"], offline=True)  # the cheap stamp cannot see it
    with pytest.raises(F.FetchError, match="sha256-prefix"):
        _fetch(served, tmp_path, only=["resnet50"], offline=True, verify=True)
    target.write_bytes(bytes(data) + b"x")  # a changed size fails the stamp: re-hashed
    with pytest.raises(F.FetchError, match="sha256-prefix"):
        _fetch(served, tmp_path, only=["resnet50"], offline=True)


# ------------------------------------------------------------------------------ item 5: not the expected kind


def test_html_page_is_refused_and_no_hash_is_recorded(served, tmp_path, caplog):
    served.mode["prototxt_and_model.zip"] = "html"
    with pytest.raises(F.FetchError, match="prototxt_and_model.zip from .*HTML page"):
        _fetch(served, tmp_path, only=["deeplab_init"])
    assert not (tmp_path / "prototxt_and_model.zip").exists()
    assert "prototxt_and_model.zip" not in F._read_json(tmp_path / F.CHECKSUMS_FILE, "")
    served.files["prototxt_and_model.zip"] = _zip({"readme.txt": b"no model"})  # a zip, but not DeepLab's
    served.mode.clear()
    with pytest.raises(F.FetchError, match="missing .*init.caffemodel"):
        _fetch(served, tmp_path, only=["deeplab_init"])
    assert not (tmp_path / "prototxt_and_model.zip").exists()
    assert "prototxt_and_model.zip" not in F._read_json(tmp_path / F.CHECKSUMS_FILE, "")
    shutil.rmtree(tmp_path / "deeplab_init")
    served.files["prototxt_and_model.zip"] = _files()["prototxt_and_model.zip"]
    with caplog.at_level(logging.INFO, logger="conta.fetch"):
        _fetch(served, tmp_path, only=["deeplab_init"])  # the real zip is accepted and only now recorded
    assert F._read_json(tmp_path / F.CHECKSUMS_FILE, "")["prototxt_and_model.zip"].startswith("sha256:")
    assert "known_hash" not in caplog.text


# ------------------------------------------------------------------------------ items 6, 7: disk


class _ReadOnly:
    """Makes writes under `root` fail with EROFS (as root, chmod does not stop writes)."""

    def __init__(self, monkeypatch, root: Path):
        self.root = str(root.resolve())
        real_open, real_replace, real_mkdir = builtins.open, os.replace, os.mkdir

        def under(p):
            return os.path.abspath(os.fspath(p)).startswith(self.root)

        def deny(p):
            raise OSError(errno.EROFS, "Read-only file system", os.fspath(p))

        def open_(file, mode="r", *a, **k):
            if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+") and under(file):
                deny(file)
            return real_open(file, mode, *a, **k)

        def replace(src, dst, **k):
            if under(dst):
                deny(dst)
            return real_replace(src, dst, **k)

        def mkdir(p, mode=0o777, **k):
            if under(p):
                deny(p)
            return real_mkdir(p, mode, **k)

        monkeypatch.setattr(builtins, "open", open_)
        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(os, "mkdir", mkdir)


def test_read_only_dest_gives_one_line(served, tmp_path, monkeypatch, capsys):
    dest = tmp_path / "ro"
    dest.mkdir()
    _ReadOnly(monkeypatch, dest)
    assert cli.main(["fetch", "voc12", "--dest", str(dest), "--only", "resnet50", "--base-url", served.url]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("conta fetch: ") and "Read-only file system" in err and "writable --dest" in err


def test_offline_on_a_read_only_tree_writes_the_overlay_elsewhere(served, tmp_path, monkeypatch, capsys):
    dest = tmp_path / "tree"
    _fetch(served, dest, only=["voc", "resnet50"])
    (dest / F.OVERLAY_FILE).unlink()
    _ReadOnly(monkeypatch, dest)
    argv = ["fetch", "voc12", "--dest", str(dest), "--only", "voc,resnet50", "--offline"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("conta fetch: writing the overlay") and "--overlay PATH" in err
    other = tmp_path / "mine" / "paths.yaml"
    assert cli.main([*argv, "--overlay", str(other)]) == 0
    assert yaml.safe_load(other.read_text())["dataset"]["root"].endswith("VOCdevkit/VOC2012")


def test_full_disk_gives_one_line_and_keeps_the_partial(served, tmp_path, monkeypatch, capsys):
    real_stream = F._stream

    def fills_up(chunks, partial, mode, prog):
        real_stream(iter([next(iter(chunks))]), partial, mode, prog)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(F, "_stream", fills_up)
    assert cli.main(["fetch", "voc12", "--dest", str(tmp_path), "--only", "resnet101", "--base-url", served.url]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("conta fetch: ") and "disk full" in err[-1] and "Traceback" not in "".join(err)


def test_free_space_is_checked_before_download_and_extraction(served, tmp_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(F.shutil, "disk_usage", lambda p: usage._replace(free=F.FREE_MARGIN + 100))
    with pytest.raises(F.FetchError, match=r"needs .* free in .*only .* are free"):
        _fetch(served, tmp_path, only=["voc"])
    assert not (tmp_path / F.PARTIAL_DIR / "VOCtrainval_11-May-2012.tar").exists()
    (tmp_path / "VOCtrainval_11-May-2012.tar").write_bytes(served.files["VOCtrainval_11-May-2012.tar"])
    with pytest.raises(F.FetchError, match=r"extracting .*needs"):
        _fetch(served, tmp_path, only=["voc"], offline=True)
    assert not (tmp_path / "VOCdevkit").exists()


def test_a_finished_partial_is_renamed_not_copied(served, tmp_path, monkeypatch):
    inodes = {}
    real_replace = os.replace

    def spy(src, dst, **k):
        inodes[Path(dst).name] = os.stat(src).st_ino
        return real_replace(src, dst, **k)

    monkeypatch.setattr(F.os, "replace", spy)
    monkeypatch.setattr(F.shutil, "copyfile", lambda *a: pytest.fail("a second copy"))
    _fetch(served, tmp_path, only=["resnet101"])
    assert (tmp_path / "resnet101-5d3b4d8f.pth").stat().st_ino == inodes["resnet101-5d3b4d8f.pth"]


# ------------------------------------------------------------------------------ item 8: extraction


def test_extraction_keeps_the_users_folders_and_follows_a_symlink(served, tmp_path):
    dest = tmp_path / "res"
    (dest / "VOCdevkit/VOC2007").mkdir(parents=True)
    (dest / "VOCdevkit/VOC2007/mine.txt").write_text("keep")
    (dest / VOC / "JPEGImages").mkdir(parents=True)
    (dest / VOC / "JPEGImages/2007_000032.jpg").write_bytes(b"user's copy")
    _fetch(served, dest, only=["voc"])
    assert (dest / "VOCdevkit/VOC2007/mine.txt").read_text() == "keep"
    assert (dest / VOC / "JPEGImages/2007_000032.jpg").read_bytes() == b"user's copy"
    assert (dest / VOC / "ImageSets/Segmentation/train.txt").exists()
    (tmp_path / "shared/VOCdevkit").mkdir(parents=True)  # a symlinked VOCdevkit (a lab's shared copy)
    dest2 = tmp_path / "res2"
    dest2.mkdir()
    (dest2 / "VOCdevkit").symlink_to(tmp_path / "shared/VOCdevkit")
    _fetch(served, dest2, only=["voc"])
    assert (tmp_path / "shared" / VOC / "ImageSets/Segmentation/train.txt").exists()
    assert (dest2 / "VOCdevkit").is_symlink() and not list((dest2 / F.PARTIAL_DIR).iterdir())


# ------------------------------------------------------------------------------ item 9: --only, the overlay


def test_only_writes_an_overlay_of_what_exists_and_merges_it(served, tmp_path):
    path = _fetch(served, tmp_path, only=["deeplab_init"])
    over = yaml.safe_load(path.read_text())
    assert set(over) == {"segmentation"}  # no VOC, SBD or resnet50 path that does not exist
    assert Path(over["segmentation"]["pretrained"]).is_file()
    _fetch(served, tmp_path, only=["resnet50", "voc"])
    over = yaml.safe_load(path.read_text())
    assert set(over) == {"segmentation", "dataset", "classifier", "irn", "amn"}
    assert "sbd_root" not in over["dataset"]


def test_cli_only_takes_a_comma_list_and_never_the_dataset(served, tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["fetch", "--only", "voc", "sbd", "voc12", "--dest", str(tmp_path)])
    assert "unknown dataset 'sbd'" in capsys.readouterr().err
    assert cli.main(["fetch", "voc12", "--dest", str(tmp_path), "--only", "imagenet", "--offline"]) == 1
    assert "unknown item" in capsys.readouterr().err
    argv = ["fetch", "voc12", "--dest", str(tmp_path), "--only", "resnet50,voc", "--base-url", served.url]
    assert cli.main(argv) == 0
    assert Path(capsys.readouterr().out.strip()).name == F.OVERLAY_FILE
    assert sorted(set(served.names())) == ["VOCtrainval_11-May-2012.tar", "resnet50-19c8e357.pth"]


# ------------------------------------------------------------------------------ item 10: network failures, mirrors


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "base,cause",
    [
        ("SERVER/missing", r"answered 404"),
        ("http://127.0.0.1:PORT/data", r"connection refused"),
        ("http://no-such-host.invalid/data", r"cannot resolve the host name"),
    ],
)
def test_failed_connections_say_that_nothing_was_kept(served, tmp_path, base, cause):
    base = base.replace("SERVER", served.url).replace("PORT", str(_free_port()))
    if base.endswith("missing"):
        served.files.pop("resnet50-19c8e357.pth")
    with pytest.raises(F.FetchError, match=cause + r".*nothing was downloaded or kept") as e:
        F.fetch("voc12", tmp_path, base_url=base, only=["resnet50"], progressbar=False)
    assert "resumes" not in str(e.value)
    assert not (tmp_path / F.PARTIAL_DIR / "resnet50-19c8e357.pth").exists()


def test_file_mirror(served, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in ("VOCtrainval_11-May-2012.tar", "resnet50-19c8e357.pth"):
        (mirror / name).write_bytes(served.files[name])
    F.fetch("voc12", tmp_path / "res", base_url=mirror.as_uri(), only=["voc", "resnet50"], progressbar=False)
    assert (tmp_path / "res" / VOC / "JPEGImages/2007_000032.jpg").exists()
    assert served.requests == []
    with pytest.raises(F.FetchError, match="no such file on the mirror"):
        F.fetch("voc12", tmp_path / "res", base_url=mirror.as_uri(), only=["sbd"], progressbar=False)


# ------------------------------------------------------------------------------ item 11


def test_modes_follow_the_umask_and_a_killed_run_leaves_no_temporary_file(served, tmp_path):
    old = os.umask(0o022)
    try:
        _fetch(served, tmp_path, only=["resnet50", "voc"])
    finally:
        os.umask(old)
    for p in [tmp_path / "resnet50-19c8e357.pth", tmp_path / F.OVERLAY_FILE, tmp_path / F.STAMPS_FILE]:
        assert p.stat().st_mode & 0o777 == 0o644, p
    part = tmp_path / F.PARTIAL_DIR
    (part / "checksums.json.12345.tmp").write_bytes(b"")  # what a kill -9 during a write leaves
    (part / "extract-voc").mkdir()
    _fetch(served, tmp_path, only=["resnet50"])
    assert not list(part.iterdir())
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("tmp")] == []


def test_progress_lines_in_a_non_terminal_log(served, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("CONTA_PROGRESS_SECONDS", "0")
    with caplog.at_level(logging.INFO, logger="conta.fetch"):
        _fetch(served, tmp_path, only=["resnet101"], progressbar=False)
    lines = [r.getMessage() for r in caplog.records if "MB/s" in r.getMessage()]
    assert lines and "resnet101-5d3b4d8f.pth: " in lines[-1] and "ETA" in lines[-1] and "%" in lines[-1]


def test_offline_needs_neither_resnet101_nor_the_caffemodel_once_converted(served, tmp_path):
    _fetch(served, tmp_path, only=["voc", "sbd", "resnet50"])
    (tmp_path / F.DEEPLAB_CONVERTED).write_bytes(_weights(3))  # converted earlier
    path = F.fetch("voc12", tmp_path, offline=True, progressbar=False)
    assert yaml.safe_load(path.read_text())["segmentation"]["pretrained"].endswith(F.DEEPLAB_CONVERTED)


def test_fetch_converts_the_init(served, tmp_path):
    _fetch(served, tmp_path, only=["deeplab_init"])
    assert (tmp_path / F.DEEPLAB_CONVERTED).is_file()


# ------------------------------------------------------------------------------ item 13, COCO


def test_closing_hint_puts_the_target_first(served, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="conta.fetch"):
        path = _fetch(served, tmp_path, only=["resnet50"])
    assert f"snakemake round3 --configfile config/voc12.yaml {path}" in caplog.text
    assert "/resources/" in (REPO / ".gitignore").read_text().split()


def test_coco14_fetch_and_overlay(served, tmp_path):
    path = _fetch(served, tmp_path, dataset="coco14", only=["coco_train", "coco_val", "coco_annotations"])
    assert path.name == "coco14_paths.yaml"
    over = yaml.safe_load(path.read_text())
    root = Path(over["dataset"]["root"])
    assert over["dataset"]["kind"] == "coco14" and over["dataset"]["sbd_root"] is None
    assert (root / "train2014/COCO_train2014_000000000009.jpg").exists()
    assert (root / "annotations/instances_val2014.json").exists()
    real = {i.fname: i.known_hash for i in F.COCO14_ITEMS}  # the widely used md5s
    assert real["train2014.zip"] == "md5:0da8c0bd3d6becc4dcb32757491aca88"
    assert real["annotations_trainval2014.zip"] == "md5:0a379cfc70b0e71301e0f377548639bd"


# ------------------------------------------------------------------------------ ResNet-38 (issue 31)


def test_resnet38_is_opt_in_checked_converted_and_in_the_overlay(tmp_path):
    import hashlib

    import numpy as np
    import torch
    from test_mxnet_params import resnet38_mx_names, write_params

    rng = np.random.default_rng(0)
    named = {k: rng.normal(size=(3,)).astype(np.float32) for k in resnet38_mx_names()}
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    params = write_params(mirror / F.RESNET38_PARAMS, named)
    md5 = hashlib.md5(params.read_bytes()).hexdigest()
    dest = tmp_path / "res"
    # not fetched unless named; with no URL of its own, a clear line says where to put it
    assert "resnet38" not in [i.name for i in F.DATASETS["voc12"] if not i.opt_in]
    with pytest.raises(F.FetchError, match="no stable public URL"):
        F.fetch("voc12", dest, only=["resnet38"], progressbar=False)
    # the built-in md5 refuses a file that is not ademxapp's
    with pytest.raises(F.FetchError):
        F.fetch("voc12", dest, base_url=mirror.as_uri(), only=["resnet38"], progressbar=False)
    overlay = F.fetch(
        "voc12",
        dest,
        base_url=mirror.as_uri(),
        only=["resnet38"],
        checksums=[f"{F.RESNET38_PARAMS}=md5:{md5}"],
        progressbar=False,
    )
    state = torch.load(dest / F.RESNET38_CONVERTED, weights_only=True)
    assert "conv1a.weight" in state and "bn7.running_var" in state
    assert F.RESNET38_CONVERTED in overlay.read_text()


def test_resnet38_of_another_format_is_refused(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / F.RESNET38_PARAMS).write_bytes(b"<html>login</html>")
    with pytest.raises(F.FetchError, match="HTML"):
        F.fetch(
            "voc12",
            tmp_path / "res",
            base_url=mirror.as_uri(),
            only=["resnet38"],
            checksums=[f"{F.RESNET38_PARAMS}=md5:{'0' * 32}"],
            progressbar=False,
        )
