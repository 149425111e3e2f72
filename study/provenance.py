"""Provenance records written next to every output, and atomic file writes."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from study.errors import StageError

_PACKAGES = ("tensorflow-cpu", "tensorflow", "keras", "numpy", "pandas", "scipy",
             "opencv-python-headless", "dlib-bin", "matplotlib", "pillow")
REPO_ROOT = Path(__file__).resolve().parent.parent


def git_commit() -> str:
    """Return the commit of this checkout, with ``+dirty`` when files differ, or ``unknown``."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=10).stdout
        return commit + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def utc_stamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def read_json(path: str | os.PathLike):
    """Load the JSON file at ``path``, raising a StageError that names it when it is damaged."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StageError(
            f"{path} is not valid JSON ({exc}). It was probably cut short or edited by hand. "
            "Restore it, or remove it and rerun the stage that wrote it (with --overwrite "
            "where that stage asks for it).") from exc


def write_json_atomic(path: str | os.PathLike, data) -> Path:
    """Write ``data`` as JSON to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def record(out_dir: str | os.PathLike, stage: str, config: dict) -> Path:
    """Write ``provenance/<stage>-<UTC time>-<pid>.json`` under ``out_dir``.

    The record holds the resolved config, the command line, the git commit,
    package versions and the host. Each run adds its own file, so a rerun
    never replaces the record of an earlier one.
    """
    info = {
        "stage": stage,
        "config": config,
        "argv": sys.argv,
        "git_commit": git_commit(),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "utc": utc_stamp(),
    }
    name = f"{stage}-{info['utc']}-{os.getpid()}.json"
    return write_json_atomic(Path(out_dir) / "provenance" / name, info)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_lines(lines) -> str:
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def describe_differences(earlier: dict, now: dict, prefix: str = "") -> list[str]:
    """List the leaves that differ between two records, as ``path: earlier X, now Y``.

    Nested records are compared key by key, so a changed embedding file names
    only its own hash. Hashes are cut to 12 characters.
    """
    def short(value):
        text = repr(value)
        return text[:13] + "...'" if isinstance(value, str) and len(value) == 64 else text

    lines = []
    for key in sorted(set(earlier) | set(now)):
        before, after = earlier.get(key), now.get(key)
        if before == after:
            continue
        if isinstance(before, dict) and isinstance(after, dict):
            lines += describe_differences(before, after, f"{prefix}{key}/")
        else:
            lines.append(f"{prefix}{key}: earlier {short(before)}, now {short(after)}")
    return lines
