"""Writing output files: atomically, with normal permissions, and with errors that name the path.

Every file ase-search writes (schedules, checkpoints, reports, sample grids, tables) goes through
:func:`atomic_write`: parent folders are created, the content lands in a temporary file next to
the target and is renamed over it, so a reader never sees a partial file and a failed write leaves
nothing behind. A write that the operating system refuses raises :class:`OutputError`, whose
message names the path the user asked for and the reason.
"""

from __future__ import annotations

import errno
import functools
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["OutputError", "atomic_write", "atomic_write_text", "check_writable", "file_sha256"]


class OutputError(OSError):
    """An output file cannot be written; the message names the path, the reason and the fix."""

    def __init__(self, path: Path, cause: OSError) -> None:
        super().__init__(cause.errno, _reason(path, cause), str(path))

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}; choose a writable path"


def _reason(path: Path, cause: OSError) -> str:
    """Why ``path`` cannot be written, in words (the OS message names the wrong file at times)."""
    if cause.errno in (errno.EEXIST, errno.ENOTDIR):
        # mkdir(parents=True) below a regular file: say which ancestor is the file.
        for parent in path.parents:
            if parent.exists():
                if not parent.is_dir():
                    return f"{parent} is a file, not a folder"
                break
    if cause.errno == errno.EISDIR and path.is_dir():
        return "it is a folder"
    where = f" ({cause.filename})" if cause.filename and cause.filename != str(path) else ""
    return f"{cause.strerror or cause}{where}"


def check_writable(path: str | os.PathLike[str]) -> None:
    """Refuse, before any work, an output path that :func:`atomic_write` could not write.

    Nothing is left behind: the check creates and removes a temporary file in the nearest
    existing folder, so it sees what the operating system allows (a read-only mount, a path below
    a regular file, a folder in place of the file), root's rights included. A write can still
    fail later (a full disk).

    Raises:
        OutputError: naming the path and the reason.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(path, IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR)))
    for parent in path.parents:
        if not parent.exists():
            continue
        if not parent.is_dir():
            raise OutputError(path, NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)))
        try:
            fd, probe = tempfile.mkstemp(dir=parent, prefix=".ase-search-probe.", suffix=".tmp")
        except OSError as err:
            raise OutputError(path, _in_folder(parent, err)) from None
        os.close(fd)
        os.unlink(probe)
        return


def _in_folder(folder: Path, err: OSError) -> OSError:
    """``err`` from creating a temporary file, reworded to blame the folder, not the file."""
    return OSError(err.errno, f"{folder} does not accept new files ({err.strerror})")


def _umask() -> int:
    # os.umask can only be read by setting it; restore it at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Write ``path`` through ``write(tmp_path)`` and an atomic rename.

    The file gets the permissions of a normally created file (``0o666`` less the umask), not the
    ``0o600`` of a temporary file.

    Args:
        path: the destination; missing parent folders are created.
        write: called with a temporary path in the destination's folder; it must create the file.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OutputError: the folder cannot be created or written, or the rename fails.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(path, err) from None
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise OutputError(path, _in_folder(path.parent, err)) from None
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OutputError(path, err) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; see :func:`atomic_write`."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of a file's bytes, read once per path, modification time and size in this
    process (a run, or a reused trial worker, asks for the same file's digest many times)."""
    p = Path(path).resolve()
    stat = p.stat()
    return _sha256(str(p), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _sha256(path: str, mtime_ns: int, size: int) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
