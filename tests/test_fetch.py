"""`conta fetch` (conta_core.data.fetch) against a local HTTP server on 127.0.0.1 serving small
archives of the real layouts: a good download, a truncated archive, a wrong checksum, a
server that drops the connection half way (then a resume), offline use and a mirror URL."""

from __future__ import annotations

import hashlib
import http.server
import io
import shutil
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest
import yaml

from conta_core import cli
from conta_core.data import fetch as F


def _tar(members: dict[str, bytes], gz: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _files() -> dict[str, bytes]:
    voc = "VOCdevkit/VOC2012/"
    sbd = "benchmark_RELEASE/dataset/"
    return {
        "VOCtrainval_11-May-2012.tar": _tar({
            voc + "JPEGImages/2007_000032.jpg": b"jpg" * 1000,
            voc + "SegmentationClass/2007_000032.png": b"png",
            voc + "ImageSets/Segmentation/train.txt": b"2007_000032\n",
            voc + "ImageSets/Segmentation/val.txt": b"2007_000033\n",
        }),
        "benchmark.tgz": _tar({sbd + "cls/2008_000002.mat": b"mat", sbd + "img/2008_000002.jpg": b"j",
                               sbd + "train.txt": b"2008_000002\n", sbd + "val.txt": b"\n"}, gz=True),
        "resnet50-19c8e357.pth": b"r50" * 5000,
        "resnet101-5d3b4d8f.pth": b"r101" * 60000,  # 240 kB: more than one network chunk before the drop
        "prototxt_and_model.zip": _zip({"init.caffemodel": b"caffe" * 100, "deploy.prototxt": b"p"}),
    }  # fmt: skip


class Server:
    """Serves `files`; `mode[name]`: good | drop (half the body, then the connection closes) |
    bad (other bytes); honours Range; records the requests."""

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
                start = 0
                rng = self.headers.get("Range")
                if rng and mode != "drop":
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
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def names(self):
        return [n for n, _ in self.requests]


@pytest.fixture()
def served(monkeypatch):
    files = _files()
    md5 = {n: hashlib.md5(d).hexdigest() for n, d in files.items()}
    sha = {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}
    items = []
    for item in F.VOC12_ITEMS:  # the real items, with the test archives' checksums of the same kinds
        known = item.known_hash
        if known and known.startswith("md5:"):
            known = f"md5:{md5[item.fname]}"
        elif known and known.startswith("sha256-prefix:"):
            known = f"sha256-prefix:{sha[item.fname][:8]}"
        items.append(
            F.Item(item.name, "http://nowhere.invalid/" + item.fname, item.fname, known, item.extract_to, item.layout)
        )
    monkeypatch.setitem(F.DATASETS, "voc12", tuple(items))
    for var in ("NO_PROXY", "no_proxy"):  # the local server, never through a proxy of the environment
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    server = Server(files)
    yield server
    server.httpd.shutdown()


def test_good_download_extracts_checks_and_writes_the_overlay(served, tmp_path):
    dest = tmp_path / "res"
    path = F.fetch("voc12", dest, base_url=served.url, progressbar=False)
    assert (dest / "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt").read_text() == "2007_000032\n"
    assert (dest / "benchmark_RELEASE/dataset/cls/2008_000002.mat").exists()
    assert (dest / "deeplab_init/init.caffemodel").exists()
    over = yaml.safe_load(path.read_text())
    assert over["dataset"]["root"] == str((dest / "VOCdevkit/VOC2012").resolve())
    assert over["classifier"]["pretrained"].endswith("resnet50-19c8e357.pth")
    records = yaml.safe_load((dest / F.CHECKSUMS_FILE).read_text())
    assert records["prototxt_and_model.zip"].startswith("sha256:")  # recorded on first use
    assert not list((dest / F.PARTIAL_DIR).iterdir()) and not list(dest.glob(".extract-*"))
    n = len(served.requests)
    F.fetch("voc12", dest, base_url=served.url, progressbar=False)  # all in place: nothing fetched
    assert len(served.requests) == n


def test_wrong_checksum_leaves_no_file(served, tmp_path):
    served.mode["benchmark.tgz"] = "bad"
    with pytest.raises(F.FetchError, match=r"benchmark\.tgz from http://127\.0\.0\.1.*(md5|hash)"):
        F.fetch("voc12", tmp_path, base_url=served.url, only=["sbd"], progressbar=False)
    assert not (tmp_path / "benchmark.tgz").exists()
    assert not (tmp_path / "benchmark_RELEASE").exists()
    assert not (tmp_path / F.PARTIAL_DIR / "benchmark.tgz").exists()  # a bad partial is not resumed


def test_truncated_archive_fails_its_checksum(served, tmp_path):
    full = served.files["VOCtrainval_11-May-2012.tar"]
    served.files["VOCtrainval_11-May-2012.tar"] = full[: len(full) // 2]  # served as a complete file
    with pytest.raises(F.FetchError, match=r"VOCtrainval_11-May-2012\.tar"):
        F.fetch("voc12", tmp_path, base_url=served.url, only=["voc"], progressbar=False)
    assert not (tmp_path / "VOCtrainval_11-May-2012.tar").exists() and not (tmp_path / "VOCdevkit").exists()


def test_sha256_prefix_mismatch_removes_the_file(served, tmp_path):
    served.mode["resnet50-19c8e357.pth"] = "bad"
    with pytest.raises(F.FetchError, match="sha256-prefix"):
        F.fetch("voc12", tmp_path, base_url=served.url, only=["resnet50"], progressbar=False)
    assert not (tmp_path / "resnet50-19c8e357.pth").exists()


def test_dropped_connection_keeps_the_partial_and_resumes(served, tmp_path):
    name = "resnet101-5d3b4d8f.pth"
    served.mode[name] = "drop"
    with pytest.raises(F.FetchError, match=r"resnet101-5d3b4d8f\.pth from .*(dropped|failed).*resumes"):
        F.fetch("voc12", tmp_path, base_url=served.url, only=["resnet101"], progressbar=False)
    partial = tmp_path / F.PARTIAL_DIR / name
    assert not (tmp_path / name).exists()
    assert 0 < partial.stat().st_size < len(served.files[name])
    served.mode[name] = "good"
    F.fetch("voc12", tmp_path, base_url=served.url, only=["resnet101"], progressbar=False)
    assert (tmp_path / name).read_bytes() == served.files[name]
    kept = int(served.requests[-1][1].removeprefix("bytes=").rstrip("-"))
    assert 0 < kept <= len(served.files[name]) // 2  # resumed where the dropped download stopped
    assert not partial.exists()


def test_recorded_checksum_is_checked_on_later_downloads(served, tmp_path):
    F.fetch("voc12", tmp_path, base_url=served.url, only=["deeplab_init"], progressbar=False)
    (tmp_path / "prototxt_and_model.zip").unlink()
    shutil.rmtree(tmp_path / "deeplab_init")
    served.mode["prototxt_and_model.zip"] = "bad"
    with pytest.raises(F.FetchError, match="prototxt_and_model.zip"):
        F.fetch("voc12", tmp_path, base_url=served.url, only=["deeplab_init"], progressbar=False)


def test_offline_checks_what_is_there(served, tmp_path):
    with pytest.raises(F.FetchError, match=r"--offline.*VOCtrainval_11-May-2012\.tar"):
        F.fetch("voc12", tmp_path, offline=True, only=["voc"], progressbar=False)
    assert served.requests == []
    F.fetch("voc12", tmp_path, base_url=served.url, only=["voc"], progressbar=False)
    F.fetch("voc12", tmp_path, offline=True, only=["voc"], progressbar=False)  # files already here


def test_cli_names_unknown_items_and_exits_1(served, tmp_path, capsys):
    assert cli.main(["fetch", "voc12", "--dest", str(tmp_path), "--only", "imagenet", "--offline"]) == 1
    assert "unknown item" in capsys.readouterr().err
    assert cli.main(["fetch", "voc12", "--dest", str(tmp_path), "--only", "resnet50", "--base-url", served.url]) == 0
    assert Path(capsys.readouterr().out.strip()).name == F.OVERLAY_FILE
