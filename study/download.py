"""Download the CelebA aligned-images archive, check its MD5 and extract it safely.

The download resumes from a ``<name>.part`` file with an HTTP Range request.
The MD5 is checked before anything is extracted. Extraction goes through a
temporary folder inside the output folder, so an interrupted run never leaves a
half-written image folder under its final name.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import shutil
import stat
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath

from tqdm import tqdm

from study import provenance
from study.errors import StageError

log = logging.getLogger(__name__)

# img_align_celeba.zip as linked from the CelebA project page
# (mmlab.ie.cuhk.edu.hk/projects/CelebA.html), served by Google Drive.
# NOTE: this URL was not contacted while writing this module (no network). Google
# Drive may return an HTML quota or virus-scan page instead of the file;
# download_file() detects that and tells the user to fetch the file by hand or
# to pass a mirror with --url.
CELEBA_URL = ("https://drive.usercontent.google.com/download"
              "?id=0B7EVK8r0v71pZjFTYXZWM3FlRnM&export=download&confirm=t")
CELEBA_ARCHIVE = "img_align_celeba.zip"
CELEBA_MD5 = "00d2c5bc6d35e252742224ab0c1e8fcb"

DEFAULT_TIMEOUT_S = 60.0
CHUNK_SIZE = 1 << 20
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_MD5_HEX = re.compile(r"[0-9a-fA-F]{32}")


# ---------------------------------------------------------------- names


def archive_name(url: str) -> str:
    """Return the archive file name: the last URL path segment if it has an archive suffix.

    URLs such as Google Drive's ``.../download?id=...`` carry no file name, so
    they get ``img_align_celeba.zip``.
    """
    segment = urllib.parse.unquote(PurePosixPath(urllib.parse.urlparse(url).path).name)
    if segment.lower().endswith(ARCHIVE_SUFFIXES):
        return segment
    return CELEBA_ARCHIVE


def archive_stem(name: str) -> str:
    """Return ``name`` without its archive suffix (``img_align_celeba.zip`` -> ``img_align_celeba``)."""
    for suffix in ARCHIVE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def normalize_md5(md5: str | None) -> str | None:
    """Return ``md5`` in lower case, or None for None or ``none``. Raise ValueError if malformed."""
    if md5 is None or md5.strip().lower() == "none":
        return None
    md5 = md5.strip()
    if not _MD5_HEX.fullmatch(md5):
        raise ValueError(f"invalid MD5 {md5!r}: expected 32 hexadecimal digits, or 'none' "
                         "to skip the check")
    return md5.lower()


def _is_nonempty_dir(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def _unused_path(path: Path) -> Path:
    """Return ``path``, or ``path.1``, ``path.2``, ... whichever does not exist yet."""
    candidate, number = path, 0
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.name}.{number}")
    return candidate


# ---------------------------------------------------------------- download


def _download_error(url: str, part: Path, reason: object) -> StageError:
    done = part.stat().st_size if part.exists() else 0
    resume = f"; it resumes from {part} ({done} bytes so far)" if done else ""
    return StageError(f"download of {url} failed: {reason}. Check the URL and the network, then "
                      f"rerun the same command{resume}.")


def _open(url: str, offset: int, timeout: float):
    """Send the GET request (with ``Range: bytes=offset-`` when offset > 0) and return the response."""
    headers = {"User-Agent": "gan-inpainting-study-download/1", "Accept-Encoding": "identity"}
    if offset > 0:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    return urllib.request.urlopen(request, timeout=timeout)


def _range_not_satisfiable(error: urllib.error.HTTPError, part: Path, offset: int) -> bool:
    """Handle HTTP 416 to a resume request; return True if ``part`` already contains the whole file.

    A run killed after the last byte but before the rename leaves a complete
    ``.part``, and the server then rejects ``bytes=<size>-``. A ``.part`` of any
    other size is truncated so the caller starts over.
    """
    match = re.fullmatch(r"bytes\s+\*/(\d+)", error.headers.get("Content-Range", "").strip())
    if match and int(match.group(1)) == offset:
        log.info("%s already contains all %d bytes (server returned HTTP 416)", part, offset)
        return True
    log.warning("server rejected the resume range of %s (HTTP 416); restarting from byte 0", part)
    part.write_bytes(b"")
    return False


def _response_total(response, offset: int, part: Path) -> tuple[int | None, str]:
    """Return (total size or None, file mode) for a 200 or 206 response to a request from ``offset``."""
    if response.status == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
        if not match or int(match.group(1)) != offset:
            raise StageError(f"server sent Content-Range {response.headers.get('Content-Range')!r} "
                             f"for a request from byte {offset} of {response.url}; delete {part} "
                             "and rerun to download from the start")
        total = None if match.group(3) == "*" else int(match.group(3))
        log.info("resuming download of %s at byte %d", part.name, offset)
        return total, "ab"
    if offset > 0:
        log.info("server ignored the Range request (HTTP %d); restarting download of %s from "
                 "byte 0", response.status, part.name)
    length = response.headers.get("Content-Length")
    return (int(length) if length and length.isdigit() else None), "wb"


def download_file(url: str, dest: str | os.PathLike, *, progress: bool = True,
                  timeout: float = DEFAULT_TIMEOUT_S, chunk_size: int = CHUNK_SIZE) -> Path:
    """Download ``url`` to ``dest`` through ``<dest>.part``, resuming an existing ``.part``.

    ``timeout`` (seconds) applies to the connection and to each read. Raises
    StageError on network errors, on an HTML page in place of an archive and on
    a connection that closes before Content-Length bytes arrived. The ``.part``
    file is kept in each case, so a rerun resumes.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0

    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset > 0:
            exc.close()
            if _range_not_satisfiable(exc, part, offset):
                os.replace(part, dest)
                return dest
            return download_file(url, dest, progress=progress, timeout=timeout, chunk_size=chunk_size)
        raise _download_error(url, part, f"HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise _download_error(url, part, reason) from exc

    with response:
        if response.status not in (200, 206):
            raise _download_error(url, part, f"unexpected HTTP status {response.status}")
        content_type = response.headers.get("Content-Type", "")
        if content_type.lower().startswith("text/html"):
            raise StageError(
                f"{url} returned an HTML page instead of the archive. Google Drive does this when "
                "the file's download quota is exceeded or a confirmation is needed. Download "
                f"{dest.name} in a browser and save it as {dest}, or pass a mirror with --url; "
                "then rerun.")
        total, mode = _response_total(response, offset, part)
        start = offset if mode == "ab" else 0

        received = 0
        with open(part, mode) as handle, tqdm(total=total, initial=start, unit="B", unit_scale=True,
                                              unit_divisor=1024, desc=dest.name,
                                              disable=not progress) as bar:
            try:
                for block in iter(lambda: response.read(chunk_size), b""):
                    handle.write(block)
                    received += len(block)
                    bar.update(len(block))
            except (OSError, http.client.HTTPException) as exc:
                handle.flush()
                raise _download_error(url, part, exc) from exc

    size = start + received
    if total is not None and size != total:
        raise _download_error(url, part, f"connection closed after {size} of {total} bytes")
    os.replace(part, dest)
    log.info("downloaded %s (%d bytes)", dest, size)
    return dest


# ---------------------------------------------------------------- checksum


def md5_file(path: str | os.PathLike, chunk_size: int = CHUNK_SIZE) -> str:
    """Return the MD5 hex digest of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_md5(archive: Path, expected: str) -> str:
    """Return the MD5 of ``archive`` if it equals ``expected``.

    On a mismatch, renames the file to ``<name>.bad-md5`` (or ``.bad-md5.1``, ...
    if that exists) and raises StageError with both digests.
    """
    log.info("checking MD5 of %s", archive)
    actual = md5_file(archive)
    if actual == expected:
        return actual
    bad = _unused_path(archive.with_name(archive.name + ".bad-md5"))
    os.replace(archive, bad)
    raise StageError(
        f"MD5 mismatch for {archive.name}: expected {expected}, got {actual}. The file was kept "
        f"as {bad}. Rerun to download it again; if the mismatch repeats, check --url, or pass the "
        "mirror's checksum with --md5 (--md5 none skips the check).")


# ---------------------------------------------------------------- extraction


def _escapes(name: str, target: Path) -> bool:
    """Return True if member ``name`` is absolute or resolves outside ``target``."""
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() \
            or PureWindowsPath(name).drive:
        return True
    resolved = os.path.normpath(os.path.join(target, name))
    return os.path.commonpath([resolved, str(target)]) != str(target)


def _zip_members(archive: Path, target: Path) -> tuple[list[str], list[str]]:
    """Return (member names, rejected members with reasons) of a zip archive."""
    names, rejected = [], []
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            names.append(info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                rejected.append(f"{info.filename} (symbolic link)")
            elif _escapes(info.filename, target):
                rejected.append(f"{info.filename} (path outside the target folder)")
    return names, rejected


def _tar_members(archive: Path, target: Path) -> tuple[list[str], list[str]]:
    """Return (member names, rejected members with reasons) of a tar archive."""
    names, rejected = [], []
    with tarfile.open(archive, "r:*") as tf:
        for member in tf.getmembers():
            names.append(member.name)
            if member.issym() or member.islnk():
                rejected.append(f"{member.name} (link to {member.linkname})")
            elif not (member.isfile() or member.isdir()):
                rejected.append(f"{member.name} (device, FIFO or other special file)")
            elif _escapes(member.name, target):
                rejected.append(f"{member.name} (path outside the target folder)")
    return names, rejected


def _single_top_folder(names: list[str]) -> str | None:
    """Return the folder every member lies in, e.g. ``img_align_celeba``, or None if there is none."""
    tops = set()
    nested = False
    for name in names:
        parts = PurePosixPath(name).parts
        if parts:
            tops.add(parts[0])
            nested = nested or len(parts) > 1 or name.endswith("/")
    if len(tops) == 1 and nested:
        return tops.pop()
    return None


def _remove_stale_temp_folders(out_dir: Path, stem: str) -> None:
    for stale in out_dir.glob(f".{stem}.extracting-*"):
        log.info("removing %s, left by an interrupted extraction", stale)
        shutil.rmtree(stale)


def extract_archive(archive: str | os.PathLike, out_dir: str | os.PathLike, *,
                    overwrite: bool = False) -> Path:
    """Extract a zip or tar archive into ``out_dir`` and return the extracted folder.

    An archive whose members all lie in one folder (CelebA's ``img_align_celeba/``)
    yields ``out_dir/<that folder>``; other archives go to ``out_dir/<archive stem>``.
    Every member is checked before anything is written: absolute paths, paths
    that resolve outside ``out_dir``, and links or special files in a tar raise
    StageError naming the members. If the final folder exists and is not empty
    it is kept as is unless ``overwrite``.
    """
    archive, out_dir = Path(archive), Path(out_dir).resolve()
    stem = archive_stem(archive.name)
    if zipfile.is_zipfile(archive):
        kind = "zip"
        names, rejected = _zip_members(archive, out_dir)
    elif tarfile.is_tarfile(archive):
        kind = "tar"
        names, rejected = _tar_members(archive, out_dir)
    else:
        raise StageError(f"{archive} is neither a zip nor a tar archive; delete it and rerun, "
                         "or pass the right --url")
    if rejected:
        listed = "; ".join(rejected[:5]) + ("; ..." if len(rejected) > 5 else "")
        raise StageError(f"rejected {archive}: {len(rejected)} unsafe member(s): {listed}. Nothing "
                         "was extracted. Check that --url points to a trusted archive.")
    if not names:
        raise StageError(f"{archive} is empty")

    top = _single_top_folder(names)
    final = out_dir / (top if top else stem)
    if _is_nonempty_dir(final) and not overwrite:
        log.info("%s already exists and is not empty; skipping extraction (pass --overwrite to "
                 "replace it)", final)
        return final

    _remove_stale_temp_folders(out_dir, stem)
    temp = out_dir / f".{stem}.extracting-{os.getpid()}"
    temp.mkdir()
    log.info("extracting %d members of %s", len(names), archive.name)
    if kind == "zip":
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(temp)
    else:
        with tarfile.open(archive, "r:*") as tf:
            # The members were checked above; the "data" filter (Python 3.11.4+)
            # also strips set-uid bits and other unsafe metadata.
            if hasattr(tarfile, "data_filter"):
                tf.extractall(temp, filter="data")
            else:
                tf.extractall(temp)

    extracted = temp / top if top else temp
    if final.exists():
        # Reached only with overwrite, or when final is an empty folder.
        old = out_dir / f".{final.name}.replaced-{os.getpid()}"
        os.replace(final, old)
        os.replace(extracted, final)
        shutil.rmtree(old)
    else:
        os.replace(extracted, final)
    if temp.exists():
        shutil.rmtree(temp)
    log.info("extracted %s", final)
    return final


# ---------------------------------------------------------------- fetch


def fetch(url: str = CELEBA_URL, out_dir: str | os.PathLike = "data", md5: str | None = CELEBA_MD5,
          *, filename: str | None = None, overwrite: bool = False, progress: bool = True,
          timeout: float = DEFAULT_TIMEOUT_S) -> Path:
    """Download, check and extract an image archive into ``out_dir``; return the image folder.

    ``md5`` is the expected hex digest of the archive, or None to skip the check.
    Reruns are cheap: an existing archive with a matching MD5 is not downloaded
    again, and an existing non-empty image folder is neither replaced (unless
    ``overwrite``) nor, when the archive is absent, downloaded again. Writes a
    provenance record under ``out_dir/provenance``.
    """
    expected = normalize_md5(md5)
    out_dir = Path(out_dir)
    name = filename or archive_name(url)
    if not name or Path(name).name != name:
        raise ValueError(f"invalid archive file name {name!r}: expected a plain name such as "
                         f"{CELEBA_ARCHIVE}")
    out_dir.mkdir(parents=True, exist_ok=True)
    archive = out_dir / name
    guessed_folder = out_dir / archive_stem(name)
    details = {"url": url, "archive": str(archive), "md5_expected": expected, "md5_actual": None,
               "downloaded": False, "overwrite": overwrite}

    if not archive.exists() and _is_nonempty_dir(guessed_folder) and not overwrite:
        log.info("%s already exists and is not empty; skipping download and extraction (pass "
                 "--overwrite to replace it)", guessed_folder)
        image_dir = guessed_folder.resolve()
        details["image_dir"] = str(image_dir)
        provenance.record(out_dir, "download", details)
        return image_dir

    if archive.exists():
        log.info("%s already exists; skipping download", archive)
    else:
        download_file(url, archive, progress=progress, timeout=timeout)
        details["downloaded"] = True

    if expected is None:
        log.warning("MD5 check skipped for %s (--md5 none)", archive)
    else:
        details["md5_actual"] = verify_md5(archive, expected)

    image_dir = extract_archive(archive, out_dir, overwrite=overwrite)
    details["image_dir"] = str(image_dir)
    provenance.record(out_dir, "download", details)
    return image_dir
