"""Tests of download.py and study.download against a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import socket
import subprocess
import sys
import tarfile
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from study import download
from study.errors import StageError

REPO = Path(__file__).resolve().parent.parent
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable

# Contents of the test archive, relative to img_align_celeba/.
IMAGE_FILES = {f"{i:06d}.jpg": bytes(range(256)) * (i + 1) + f"image {i}".encode() for i in range(1, 6)}


@dataclass
class ServerState:
    """Files the test server serves and how it behaves. The handler appends each request's details."""
    files: dict = field(default_factory=dict)
    content_type: str = "application/zip"
    support_range: bool = True
    drop_after: int | None = None
    range_headers: list = field(default_factory=list)
    statuses: list = field(default_factory=list)


class Handler(BaseHTTPRequestHandler):
    state: ServerState

    def do_GET(self):
        state = self.state
        range_header = self.headers.get("Range")
        state.range_headers.append(range_header)
        data = state.files.get(self.path.split("?")[0])
        if data is None:
            self._reply(404, b"not found", "text/plain")
            return

        start = 0
        if range_header and state.support_range:
            start = int(range_header.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                state.statuses.append(416)
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            state.statuses.append(206)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            state.statuses.append(200)
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Type", state.content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if state.drop_after is not None:
            # Send part of the body and close, as a dropped connection would.
            self.wfile.write(body[: state.drop_after])
            self.close_connection = True
            return
        self.wfile.write(body)

    def _reply(self, status, body, content_type):
        self.state.statuses.append(status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


@pytest.fixture
def server():
    """Serve ServerState.files on a free port of 127.0.0.1; yield (base URL, state)."""
    state = ServerState()
    handler = type("TestHandler", (Handler,), {"state": state})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", state
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def make_zip(members: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def celeba_zip() -> bytes:
    members = {"img_align_celeba/": b""}
    members.update({f"img_align_celeba/{name}": data for name, data in IMAGE_FILES.items()})
    return make_zip(members)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def folder_contents(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def closed_port() -> int:
    """Return a local port that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_fetch_downloads_checks_and_extracts(server, tmp_path):
    url, state = server
    archive = celeba_zip()
    state.files["/img_align_celeba.zip"] = archive
    out = tmp_path / "data"

    image_dir = download.fetch(f"{url}/img_align_celeba.zip", out, md5(archive), progress=False)

    assert image_dir == (out / "img_align_celeba").resolve()
    assert folder_contents(image_dir) == IMAGE_FILES
    assert (out / "img_align_celeba.zip").read_bytes() == archive
    assert not (out / "img_align_celeba.zip.part").exists()
    assert state.range_headers == [None]
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    records = list((out / "provenance").glob("download-*.json"))
    assert len(records) == 1
    config = json.loads(records[0].read_text())["config"]
    assert config["md5_actual"] == md5(archive)
    assert config["downloaded"] is True


def test_fetch_reuses_complete_archive(server, tmp_path):
    url, state = server
    archive = celeba_zip()
    state.files["/x.zip"] = archive
    out = tmp_path / "data"
    download.fetch(f"{url}/x.zip", out, md5(archive), progress=False)
    image_dir = download.fetch(f"{url}/x.zip", out, md5(archive), progress=False, overwrite=True)

    assert len(state.range_headers) == 1
    assert folder_contents(image_dir) == IMAGE_FILES


def test_interrupted_download_resumes(server, tmp_path):
    url, state = server
    archive = celeba_zip()
    state.files["/x.zip"] = archive
    out = tmp_path / "data"
    cut = len(archive) // 3
    state.drop_after = cut

    with pytest.raises(StageError) as excinfo:
        download.fetch(f"{url}/x.zip", out, md5(archive), progress=False)
    message = str(excinfo.value)
    assert f"{url}/x.zip" in message
    assert f"connection closed after {cut} of {len(archive)} bytes" in message
    part = out / "x.zip.part"
    assert f"rerun the same command; it resumes from {part} ({cut} bytes so far)" in message
    assert part.read_bytes() == archive[:cut]
    assert not (out / "x.zip").exists()

    state.drop_after = None
    image_dir = download.fetch(f"{url}/x.zip", out, md5(archive), progress=False)

    assert state.range_headers == [None, f"bytes={cut}-"]
    assert state.statuses == [200, 206]
    assert (out / "x.zip").read_bytes() == archive
    assert not part.exists()
    assert folder_contents(image_dir) == IMAGE_FILES


def test_server_without_range_restarts(server, tmp_path, caplog):
    url, state = server
    archive = celeba_zip()
    state.files["/x.zip"] = archive
    state.support_range = False
    out = tmp_path / "data"
    out.mkdir()
    # Bytes that differ from the archive, so appending to them would fail the MD5 check.
    (out / "x.zip.part").write_bytes(b"\xff" * 100)

    with caplog.at_level(logging.INFO, logger="study.download"):
        image_dir = download.fetch(f"{url}/x.zip", out, md5(archive), progress=False)

    assert state.range_headers == ["bytes=100-"]
    assert state.statuses == [200]
    assert "server ignored the Range request (HTTP 200)" in caplog.text
    assert (out / "x.zip").read_bytes() == archive
    assert folder_contents(image_dir) == IMAGE_FILES


def test_complete_part_file_finishes(server, tmp_path):
    url, state = server
    archive = celeba_zip()
    state.files["/x.zip"] = archive
    out = tmp_path / "data"
    out.mkdir()
    (out / "x.zip.part").write_bytes(archive)

    image_dir = download.fetch(f"{url}/x.zip", out, md5(archive), progress=False)

    assert state.statuses == [416]
    assert (out / "x.zip").read_bytes() == archive
    assert folder_contents(image_dir) == IMAGE_FILES


def test_md5_mismatch_keeps_file(server, tmp_path):
    url, state = server
    archive = celeba_zip()
    state.files["/x.zip"] = archive
    out = tmp_path / "data"
    wrong = "0" * 32

    with pytest.raises(StageError) as excinfo:
        download.fetch(f"{url}/x.zip", out, wrong, progress=False)

    message = str(excinfo.value)
    assert f"expected {wrong}" in message
    assert f"got {md5(archive)}" in message
    assert "x.zip.bad-md5" in message
    assert (out / "x.zip.bad-md5").read_bytes() == archive
    assert not (out / "x.zip").exists()
    assert not (out / "img_align_celeba").exists()

    # A second mismatch keeps the first bad file too.
    with pytest.raises(StageError):
        download.fetch(f"{url}/x.zip", out, wrong, progress=False)
    assert (out / "x.zip.bad-md5.1").read_bytes() == archive
    assert (out / "x.zip.bad-md5").read_bytes() == archive


def test_md5_none_skips_check(server, tmp_path, caplog):
    url, state = server
    archive = celeba_zip()
    state.files["/x.zip"] = archive

    with caplog.at_level(logging.WARNING, logger="study.download"):
        image_dir = download.fetch(f"{url}/x.zip", tmp_path, "none", progress=False)

    assert "MD5 check skipped" in caplog.text
    assert folder_contents(image_dir) == IMAGE_FILES


def test_invalid_md5_rejected(tmp_path):
    with pytest.raises(ValueError, match="invalid MD5 'abc'"):
        download.fetch("http://127.0.0.1:1/x.zip", tmp_path, "abc", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_unsafe_zip_members_rejected(server, tmp_path):
    url, state = server
    out = tmp_path / "out" / "data"
    absolute = tmp_path / "absolute_evil.txt"
    archive = make_zip({"img_align_celeba/000001.jpg": b"ok",
                        "../evil.txt": b"evil",
                        str(absolute): b"evil"})
    state.files["/x.zip"] = archive

    with pytest.raises(StageError) as excinfo:
        download.fetch(f"{url}/x.zip", out, md5(archive), progress=False)

    message = str(excinfo.value)
    assert "2 unsafe member(s)" in message
    assert "../evil.txt" in message
    assert str(absolute) in message
    assert not (tmp_path / "out" / "evil.txt").exists()
    assert not absolute.exists()
    assert sorted(p.name for p in out.iterdir()) == ["x.zip"]


def make_tar(add_members) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        add_members(tf)
    return buffer.getvalue()


def add_file(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def test_unsafe_tar_members_rejected(tmp_path):
    def add_members(tf):
        add_file(tf, "img_align_celeba/000001.jpg", b"ok")
        add_file(tf, "img_align_celeba/../../evil.txt", b"evil")
        link = tarfile.TarInfo("img_align_celeba/link")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tf.addfile(link)

    out = tmp_path / "data"
    out.mkdir()
    archive = out / "x.tar.gz"
    archive.write_bytes(make_tar(add_members))

    with pytest.raises(StageError) as excinfo:
        download.extract_archive(archive, out)

    message = str(excinfo.value)
    assert "img_align_celeba/../../evil.txt (path outside the target folder)" in message
    assert "img_align_celeba/link (link to /etc/passwd)" in message
    assert not (tmp_path / "evil.txt").exists()
    assert sorted(p.name for p in out.iterdir()) == ["x.tar.gz"]


def test_tar_gz_extracts(tmp_path):
    def add_members(tf):
        for name, data in IMAGE_FILES.items():
            add_file(tf, f"img_align_celeba/{name}", data)

    archive = tmp_path / "faces.tar.gz"
    archive.write_bytes(make_tar(add_members))

    image_dir = download.extract_archive(archive, tmp_path)

    assert image_dir == (tmp_path / "img_align_celeba").resolve()
    assert folder_contents(image_dir) == IMAGE_FILES


def test_flat_zip_goes_to_stem_folder(tmp_path):
    archive = tmp_path / "faces.zip"
    archive.write_bytes(make_zip({"a.jpg": b"a", "b.jpg": b"b"}))

    image_dir = download.extract_archive(archive, tmp_path)

    assert image_dir == (tmp_path / "faces").resolve()
    assert folder_contents(image_dir) == {"a.jpg": b"a", "b.jpg": b"b"}


def test_existing_folder_not_overwritten(server, tmp_path):
    url, state = server
    archive = celeba_zip()
    state.files["/img_align_celeba.zip"] = archive
    out = tmp_path / "data"
    existing = out / "img_align_celeba"
    existing.mkdir(parents=True)
    (existing / "mine.txt").write_bytes(b"user data")

    # Without the archive, the existing folder means nothing is downloaded.
    image_dir = download.fetch(f"{url}/img_align_celeba.zip", out, md5(archive), progress=False)
    assert image_dir == existing.resolve()
    assert state.range_headers == []
    assert folder_contents(existing) == {"mine.txt": b"user data"}

    # With the archive present, extraction is still skipped.
    (out / "img_align_celeba.zip").write_bytes(archive)
    download.fetch(f"{url}/img_align_celeba.zip", out, md5(archive), progress=False)
    assert folder_contents(existing) == {"mine.txt": b"user data"}

    image_dir = download.fetch(f"{url}/img_align_celeba.zip", out, md5(archive), progress=False,
                               overwrite=True)
    assert folder_contents(image_dir) == IMAGE_FILES
    assert state.range_headers == []
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_html_page_rejected(server, tmp_path):
    url, state = server
    state.files["/download"] = b"<html>Quota exceeded</html>"
    state.content_type = "text/html; charset=utf-8"

    with pytest.raises(StageError, match="returned an HTML page instead of the archive"):
        download.fetch(f"{url}/download?id=abc", tmp_path, None, progress=False)
    assert not (tmp_path / "img_align_celeba.zip").exists()


def test_http_404_names_url(server, tmp_path):
    url, _ = server
    with pytest.raises(StageError) as excinfo:
        download.fetch(f"{url}/missing.zip", tmp_path, None, progress=False)
    assert f"download of {url}/missing.zip failed: HTTP 404" in str(excinfo.value)


def test_read_timeout_reported(tmp_path):
    # A socket that listens but never accepts: the connection succeeds, the response never comes.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/x.zip"
        with pytest.raises(StageError) as excinfo:
            download.fetch(url, tmp_path, None, progress=False, timeout=0.3)
    message = str(excinfo.value)
    assert f"download of {url} failed" in message
    assert "timed out" in message


@pytest.mark.parametrize("url, name", [
    (download.CELEBA_URL, "img_align_celeba.zip"),
    ("http://mirror/lab/img_align_celeba.zip", "img_align_celeba.zip"),
    ("http://mirror/faces%20v2.tar.gz?token=1", "faces v2.tar.gz"),
    ("http://mirror/files/", "img_align_celeba.zip"),
])
def test_archive_name_from_url(url, name):
    assert download.archive_name(url) == name


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, str(REPO / "download.py"), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_cli_prints_image_folder(server, tmp_path):
    url, state = server
    archive = celeba_zip()
    state.files["/x.zip"] = archive
    out = tmp_path / "data"

    result = run_cli("--url", f"{url}/x.zip", "--out", str(out), "--md5", md5(archive),
                     "--no-progress")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str((out / "img_align_celeba").resolve())
    assert folder_contents(out / "img_align_celeba") == IMAGE_FILES
    assert len(list((out / "provenance").glob("download-*.json"))) == 1


def test_cli_connection_refused_exits_2(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/x.zip"

    result = run_cli("--url", url, "--out", str(tmp_path), "--md5", "none", "--no-progress")

    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: download of {url} failed")
    assert "Connection refused" in result.stderr
    assert result.stdout == ""
