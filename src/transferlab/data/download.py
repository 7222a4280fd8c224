"""Checksummed, resumable downloads and atomic extraction.

A dataset is either fully in place or absent: bytes go to `<file>.part` (resumed
with an HTTP Range request after a cut connection), are checked against the
published checksum, and only then renamed to `<file>`; archives are extracted
into a temporary directory that is renamed into place when complete. A later
run trusts only what carries the final name.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from transferlab.errors import TransferlabError

log = logging.getLogger(__name__)


class DownloadError(TransferlabError):
    """A file could not be downloaded or failed its checksum."""


@dataclass(frozen=True)
class Remote:
    """A published file: where it lives and how to recognise it."""

    url: str
    filename: str
    md5: str | None = None  # the checksum its publisher (or torchvision) gives, when there is one
    sha256: str | None = None

    def checksum(self) -> str:
        return f"sha256 {self.sha256}" if self.sha256 else f"md5 {self.md5}" if self.md5 else "none published"


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def matches(path: Path, remote: Remote) -> bool:
    if remote.sha256:
        return file_digest(path, "sha256") == remote.sha256
    if remote.md5:
        return file_digest(path, "md5") == remote.md5
    return True


def _fetch(url: str, partial: Path, timeout: float) -> None:
    """Append the missing bytes of `url` to `partial` (all of them if the server ignores Range)."""
    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        if have and response.status != 206:
            have = 0  # no partial content: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with partial.open("ab" if have else "wb") as out, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, desc=partial.name.removesuffix(".part"), leave=False
        ) as bar:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
                bar.update(len(chunk))
    if total is not None and partial.stat().st_size != total:
        raise http.client.IncompleteRead(b"", total - partial.stat().st_size)


def download(remote: Remote, directory: Path, retries: int = 3, timeout: float = 60.0) -> Path:
    """`directory/remote.filename`, downloaded and verified unless it already is."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / remote.filename
    if target.is_file():
        return target
    partial = target.with_name(target.name + ".part")
    for attempt in range(1, retries + 1):
        try:
            _fetch(remote.url, partial, timeout)
            break
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            log.warning("download of %s failed (attempt %d/%d): %s", remote.url, attempt, retries, error)
            if attempt == retries:
                raise DownloadError(
                    f"Could not download {remote.url} ({error}).\n"
                    f"  file: {remote.filename}  checksum: {remote.checksum()}\n"
                    f"  put it at: {target}  (or point data.root at an extracted copy)"
                ) from error
            time.sleep(0.5 * attempt)
    if not matches(partial, remote):
        partial.unlink()
        raise DownloadError(
            f"{remote.filename} from {remote.url} does not match its published checksum ({remote.checksum()}); "
            f"the download was deleted. Try again, or put a verified copy at {target}."
        )
    os.replace(partial, target)
    return target


def _safe_members(archive: tarfile.TarFile, destination: Path) -> list[tarfile.TarInfo]:
    """Refuse members that would land outside the destination (absolute paths, `..`, links)."""
    root = destination.resolve()
    members = []
    for member in archive.getmembers():
        if member.issym() or member.islnk() or not (root / member.name).resolve().is_relative_to(root):
            raise DownloadError(f"refusing unsafe archive member {member.name!r}")
        members.append(member)
    return members


def extract(archive: Path, destination: Path, inside: str) -> Path:
    """Extract `archive` and move its top-level folder `inside` to `destination`, atomically."""
    if destination.is_dir():
        return destination
    staging = destination.parent / f".{destination.name}.extracting-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zipped:
                for name in zipped.namelist():
                    if not (staging / name).resolve().is_relative_to(staging.resolve()):
                        raise DownloadError(f"refusing unsafe archive member {name!r}")
                zipped.extractall(staging)
        else:
            with tarfile.open(archive) as tarred:
                tarred.extractall(staging, members=_safe_members(tarred, staging))
        if not (staging / inside).is_dir():
            raise DownloadError(f"{archive.name} has no top-level folder {inside!r}")
        os.replace(staging / inside, destination)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as error:
        raise DownloadError(f"{archive} is not a readable archive ({error}); delete it to download again") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return destination
