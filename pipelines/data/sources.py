"""Where a data set comes from: a folder the user names, the bundled sample, the local
download cache, or the canonical download (sha256-checked, with a progress bar).

The folder the user names may also be an archive as downloaded (`.tar.gz`, `.tgz`, `.tar`,
`.tar.bz2`, `.tar.xz`, e.g. CUCUMBER-9's `cucumber-9-python.tar.gz`): it is unpacked once into
`data/cache/archives/<name>-<sha256>/` and reused while the archive is unchanged. An archive
holding absolute paths, `..`, links pointing out of its folder or device files is refused
before anything is written; what is extracted goes through `tarfile`'s `data` filter as well.

Nothing here decodes data: it only finds (or fetches) files and proves they are the
expected ones. The loaders turn files into arrays.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from pipelines.core import paths
from pipelines.core.errors import PipelineError


@dataclass(frozen=True)
class RemoteFile:
    """One file of a data set's canonical release."""

    name: str
    url: str
    sha256: str


@dataclass(frozen=True)
class LocatedData:
    folder: Path
    origin: str  # "sample", "data_dir", "system", "cache" or "download"


def sha256sum(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def locate(
    usecase: str,
    source: str,
    data_dir: str | None,
    remote_files: tuple[RemoteFile, ...],
    system_dirs: tuple[str, ...] = (),
    describe: str = "",
) -> LocatedData:
    """Find the data for `usecase`, in this order: the named folder, the bundled sample
    (when `source == "sample"`), a system folder (e.g. a Debian data package), the
    download cache `data/raw/<usecase>/`, then the canonical download into that cache."""
    if source not in ("full", "sample"):
        raise PipelineError(f"data source '{source}' is not one of: full, sample")
    if data_dir:
        folder = Path(data_dir).expanduser()
        if folder.is_file() and folder.name.endswith(ARCHIVE_SUFFIXES):
            return LocatedData(unpacked(folder), "data_dir")
        if not folder.is_dir():
            raise PipelineError(f"--data-dir {data_dir} is not a folder or a .tar.gz archive; name the folder that holds "
                                f"{describe or 'the data set'}")
        return LocatedData(folder.resolve(), "data_dir")
    if source == "sample":
        folder = paths.samples_dir(usecase)
        if not folder.is_dir():
            raise PipelineError(f"no bundled sample for '{usecase}' at {folder}; is this a complete checkout?")
        return LocatedData(folder, "sample")
    names = [remote.name for remote in remote_files]
    for system_dir in system_dirs:
        folder = Path(system_dir)
        if names and all((folder / name).is_file() for name in names):
            return LocatedData(folder, "system")
    cache = paths.download_dir(usecase)
    if not remote_files:
        if cache.is_dir() and any(cache.iterdir()):
            return LocatedData(cache, "cache")
        raise PipelineError(
            f"no full data for '{usecase}': put {describe or 'the data set'} in {cache} or pass --data-dir DIR, or use DATA=sample"
        )
    origin = "cache"
    for remote in remote_files:
        target = cache / remote.name
        if target.is_file() and sha256sum(target) == remote.sha256:
            continue
        _download(remote, target, usecase, describe)
        origin = "download"
    return LocatedData(cache, origin)


ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")


def unpacked(archive: Path) -> Path:
    """The data folder inside `archive`, unpacked into the data cache (once per archive content).

    The cache is keyed by the archive's sha256, so a changed archive is unpacked afresh and an
    unchanged one never twice. Unpacking goes to a hidden folder renamed into place at the end:
    an interrupted unpack never looks complete. A folder holding a single folder (the usual
    `name/...` archive) is descended into, so the loader sees the files themselves.
    """
    import shutil
    import tarfile
    import zlib

    digest = sha256sum(archive)
    stem = next(archive.name[: -len(suffix)] for suffix in ARCHIVE_SUFFIXES if archive.name.endswith(suffix))
    target = paths.data_root() / "cache" / "archives" / f"{stem}-{digest[:16]}"
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{target.name}.{os.getpid()}.part")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            with tarfile.open(archive) as tar:
                members = tar.getmembers()
                for member in members:
                    _refuse_unsafe(member, archive, staging)
                tar.extractall(staging, members=members, filter="data")
            try:
                os.rename(staging, target)
            except OSError:
                if not target.is_dir():  # not a concurrent unpack of the same archive that won the race
                    raise
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise PipelineError(f"{archive} is truncated or not a tar archive ({type(exc).__name__}: {exc}); "
                                f"re-download it") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    folder = target
    while len(entries := list(folder.iterdir())) == 1 and entries[0].is_dir():
        folder = entries[0]
    return folder


def _refuse_unsafe(member, archive: Path, destination: Path) -> None:
    """Raise PipelineError for a member that would write outside `destination` or is not a
    plain file, folder or inside link. `tarfile`'s `data` filter refuses most of these while
    extracting, but it strips a leading `/` instead of refusing: a crafted archive is refused
    whole, before any file is written."""
    import tarfile
    from pathlib import PurePosixPath

    reason = None
    if member.name.startswith("/") or PurePosixPath(member.name).is_absolute():
        reason = "an absolute path"
    elif ".." in PurePosixPath(member.name).parts:
        reason = "a path with '..'"
    elif member.isdev():
        reason = "a device file or pipe"
    else:
        try:
            tarfile.data_filter(member, str(destination))
        except (tarfile.AbsoluteLinkError, tarfile.LinkOutsideDestinationError):
            reason = f"a link pointing out of the folder (to {member.linkname})"
        except tarfile.FilterError as exc:
            reason = f"refused by tarfile's data filter ({exc})"
    if reason:
        raise PipelineError(f"{archive}: refusing to unpack it: member '{member.name}' is {reason}; "
                            f"is it the archive as published?")


def _download(remote: RemoteFile, target: Path, usecase: str, describe: str) -> None:
    """Download to `<target>.part`, check sha256, then rename: an interrupted or corrupt
    download never leaves a file that looks complete."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    print(f"downloading {remote.url}", file=sys.stderr)
    try:
        with urllib.request.urlopen(remote.url, timeout=60) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            progress = _Progress(remote.name, total)
            while block := response.read(1 << 16):
                out.write(block)
                progress.update(len(block))
            progress.close()
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        partial.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise PipelineError(
            f"cannot download {remote.url} ({reason}); offline? pass --data-dir DIR (a folder with "
            f"{describe or remote.name}), copy the files into {target.parent}, or use DATA=sample"
        ) from None
    actual = sha256sum(partial)
    if actual != remote.sha256:
        partial.unlink(missing_ok=True)
        raise PipelineError(f"{remote.url} has sha256 {actual}, expected {remote.sha256}; the download is corrupt or the file changed upstream")
    os.replace(partial, target)


class _Progress:
    """A one-line progress bar on stderr (only when it is a terminal; a log gets one line at the end)."""

    def __init__(self, name: str, total: int):
        self.name, self.total, self.done = name, total, 0
        self.interactive = sys.stderr.isatty()
        self.last = 0.0

    def update(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if self.interactive and now - self.last > 0.1:
            self.last = now
            if self.total:
                filled = int(30 * self.done / self.total)
                bar = "#" * filled + "." * (30 - filled)
                print(f"\r  {self.name} [{bar}] {self.done / 1e6:.1f}/{self.total / 1e6:.1f} MB", end="", file=sys.stderr)
            else:
                print(f"\r  {self.name} {self.done / 1e6:.1f} MB", end="", file=sys.stderr)

    def close(self) -> None:
        end = "\n" if self.interactive else ""
        print(f"{end}  {self.name}: {self.done / 1e6:.1f} MB", file=sys.stderr)
