"""Checksummed, resumable downloads and atomic extraction.

A dataset is either fully in place or absent: bytes go to `<file>.part` (resumed
with an HTTP Range request after a cut connection), are checked against the
published checksum, and only then renamed to `<file>`; archives are extracted
into a temporary directory that is renamed into place when complete. A later
run trusts only what carries the final name. Jobs that want the same file or
folder at once take its lock (files.py): one downloads or extracts, the
others wait and use its result.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import secrets
import shutil
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from transferlab.errors import TransferlabError
from transferlab.files import locked

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
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code != 416 or not have:
            raise
        # Range not satisfiable: nothing lies beyond the part (a run stopped between its last byte and
        # the rename). The checksum decides whether it is this file; a part longer than the file is not.
        size = _range_size(error.headers.get("Content-Range"))
        error.close()
        if size is not None and size != have:
            partial.unlink()
            _fetch(url, partial, timeout)
        return
    with response:
        if have and response.status != 206:
            have = 0  # no partial content: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with (
            partial.open("ab" if have else "wb") as out,
            tqdm(
                total=total,
                initial=have,
                unit="B",
                unit_scale=True,
                desc=partial.name.removesuffix(".part"),
                leave=False,
            ) as bar,
        ):
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
                bar.update(len(chunk))
    if total is not None and partial.stat().st_size != total:
        raise http.client.IncompleteRead(b"", total - partial.stat().st_size)


def _range_size(content_range: str | None) -> int | None:
    """The file's size from a 416's `Content-Range: bytes */SIZE`, when the server gives it."""
    size = (content_range or "").rpartition("/")[2]
    return int(size) if size.isdigit() else None


def download(remote: Remote, directory: Path, retries: int = 3, timeout: float = 60.0) -> Path:
    """`directory/remote.filename`, downloaded and verified unless it already is. Jobs that want
    the same file at once wait for the one that downloads it."""
    target = directory / remote.filename
    if target.is_file():
        return target
    with locked(target):
        if not target.is_file():  # another job may have published it while this one waited
            _download(remote, target, retries, timeout)
    return target


def _download(remote: Remote, target: Path, retries: int, timeout: float) -> None:
    """Fetch into `<file>.part` and rename it into place once it matches its checksum. A part that an
    earlier run left is resumed; should it then fail the checksum, the old bytes may be what is wrong:
    start over once."""
    partial = target.with_name(target.name + ".part")  # one name, written under the lock: a later run resumes it
    resumed = partial.exists()
    _fetch_with_retries(remote, partial, target, retries, timeout)
    verified = matches(partial, remote)
    if not verified and resumed:
        log.warning(
            "%s does not match its checksum (%s): downloading it again from the start", partial, remote.checksum()
        )
        partial.unlink()
        _fetch_with_retries(remote, partial, target, retries, timeout)
        verified = matches(partial, remote)
    if not verified:
        partial.unlink()
        raise DownloadError(
            f"{remote.filename} from {remote.url} does not match its published checksum ({remote.checksum()}); "
            f"the download was deleted. Try again, or put a verified copy at {target}."
        )
    os.replace(partial, target)


def _fetch_with_retries(remote: Remote, partial: Path, target: Path, retries: int, timeout: float) -> None:
    for attempt in range(1, retries + 1):
        try:
            _fetch(remote.url, partial, timeout)
            return
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            log.warning("download of %s failed (attempt %d/%d): %s", remote.url, attempt, retries, error)
            if attempt == retries:
                raise DownloadError(
                    f"Could not download {remote.url} ({error}).\n"
                    f"  file: {remote.filename}  checksum: {remote.checksum()}\n"
                    f"  put it at: {target}  (or point data.root at an extracted copy)"
                ) from error
            time.sleep(0.5 * attempt)


def extract(archive: Path, destination: Path, inside: str) -> Path:
    """Extract `archive` and move its top-level folder `inside` to `destination`, atomically. Jobs
    that want the same folder at once wait for the one that extracts it."""
    if destination.is_dir():
        return destination
    with locked(destination):
        if not destination.is_dir():  # another job may have extracted it while this one waited
            _extract(archive, destination, inside)
    return destination


def _extract(archive: Path, destination: Path, inside: str) -> None:
    prefix = f".{destination.name}.extracting-"
    for stale in (p for p in destination.parent.iterdir() if p.name.startswith(prefix)):
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed run: under the lock, no one else extracts here
    staging = destination.parent / f"{prefix}{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir(parents=True)
    log.info("extracting %s to %s", archive.name, destination)
    try:
        _unpack(archive, staging)
        if not (staging / inside).is_dir():
            raise DownloadError(f"{archive} has no top-level folder {inside!r}; delete it to download again")
        os.replace(staging / inside, destination)
    except OSError as error:
        if destination.is_dir():  # published by a job that could take no lock: the same archive, the same folder
            return
        raise DownloadError(
            f"could not move the extracted {inside} to {destination} ({error}); check the permissions of {destination.parent}"
        ) from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _unpack(archive: Path, staging: Path) -> None:
    """Everything in `archive` into `staging`; a broken archive is a DownloadError that says to delete it."""
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zipped:
                for name in zipped.namelist():
                    if not (staging / name).resolve().is_relative_to(staging.resolve()):
                        raise DownloadError(f"refusing unsafe archive member {name!r}")
                zipped.extractall(staging)
        else:
            with tarfile.open(archive) as tarred:
                # The standard library's "data" filter refuses members that would land outside `staging`
                # (absolute paths, `..`, links out of it) and device files (PEP 706).
                tarred.extractall(staging, filter="data")
    except tarfile.FilterError as error:
        raise DownloadError(f"refusing unsafe archive member {error.tarinfo.name!r} in {archive} ({error})") from error
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as error:
        raise DownloadError(f"{archive} is not a readable archive ({error}); delete it to download again") from error
    except OSError as error:
        if error.errno is None:  # gzip.BadGzipFile and kin: the archive, not the disk
            raise DownloadError(
                f"{archive} is not a readable archive ({error}); delete it to download again"
            ) from error
        raise DownloadError(
            f"could not extract {archive} into {staging.parent} ({error}); free space there or fix its permissions"
        ) from error
