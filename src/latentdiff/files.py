"""Writing files so that a reader or a crash never sees half of one, and checking output paths
before the work.

Every file latentdiff writes goes through `atomic_write` (or `atomic_folder` for a folder): the
content is written to a temporary name of our own in the destination's folder
(`.NAME.PID.latentdiff.tmp`), flushed and fsynced, then renamed over the destination, and the folder
is fsynced. A crash (even SIGKILL) leaves either the old file or the new one; the temporary it may
leave behind is removed by `remove_stale_temporaries` on the next write there.
"""

import contextlib
import glob
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from latentdiff.errors import UserError

TMP_SUFFIX = ".latentdiff.tmp"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temporary_name(path: Path) -> Path:
    """The temporary sibling that `path` is written through: `.NAME.PID.latentdiff.tmp`."""
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: Path, name: str | None = None,
                             everything: bool = False) -> list[Path]:
    """Remove our temporaries of `name` (all names with None) in `folder` whose writer is gone (all
    of them with `everything`, e.g. a run folder held under its lock); returns what was removed."""
    removed = []
    for tmp in Path(folder).glob(f".{'*' if name is None else glob.escape(name)}.*{TMP_SUFFIX}"):
        pid = tmp.name[:-len(TMP_SUFFIX)].rsplit(".", 1)[-1]
        if everything or not pid.isdigit() or (int(pid) != os.getpid()
                                               and not _pid_alive(int(pid))):
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """`with atomic_write(path) as f: f.write(...)`: `path` appears whole when the block ends
    without an error, and is untouched otherwise (the temporary is removed)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the folder of {path}: {e.strerror or e}") from None
    remove_stale_temporaries(path.parent, path.name)
    tmp = temporary_name(path)
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
        fsync_folder(path.parent)
    except OSError as e:  # a full disk, a folder made read-only meanwhile: the old file stays
        raise UserError(f"cannot write {path}: {e.strerror or e}; {path} is unchanged") from None
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_write(path) as f:
        f.write(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode())


@contextlib.contextmanager
def atomic_folder(path: str | Path, replace: bool = False) -> Iterator[Path]:
    """`with atomic_folder(dst) as tmp:` fill the folder `tmp`; it becomes `dst` when the block ends
    without an error, and is removed otherwise. `dst` must not exist, or with `replace` an existing
    one is swapped out (renamed aside, then removed) only once the new one is complete."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path.parent, path.name)
        tmp.mkdir()
    except OSError as e:
        raise UserError(f"cannot create {tmp}: {e.strerror or e}") from None
    try:
        yield tmp
        for root, _, names in os.walk(tmp):
            for name in names:
                with open(Path(root) / name, "rb") as f:
                    os.fsync(f.fileno())
        old = path.with_name(f".{path.name}.{os.getpid()}.old{TMP_SUFFIX}")
        if replace and path.is_dir():
            os.rename(path, old)
        os.rename(tmp, path)
        fsync_folder(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        raise UserError(f"cannot write the folder {path}: {e.strerror or e}; {path} "
                        "is unchanged") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def check_output(path: str | Path, what: str, suffixes: tuple[str, ...] = (),
                 kind: str = "file") -> Path:
    """A one-line error, before any work, when `path` cannot be written as `kind` ("file", "new
    folder", or "folder": new or existing): a folder where a file is wanted (or anything where a new
    folder is), a missing or unknown extension, a parent that is a file, or a folder that is not
    writable. Creates nothing."""
    path = Path(path)
    if kind == "new folder" and path.exists():
        raise UserError(f"{what} {path} already exists; give a new folder name")
    if kind == "file" and path.is_dir():
        example = f", e.g. {path / ('out' + suffixes[0])}" if suffixes else ""
        raise UserError(f"{what} {path} is a folder; give a file name{example}")
    if kind == "folder" and path.exists() and not path.is_dir():
        raise UserError(f"{what} {path} is a file; give a folder")
    if suffixes and path.suffix.lower() not in suffixes:
        found = f"extension {path.suffix!r}" if path.suffix else "no extension"
        raise UserError(f"{what} {path} has {found}; use {' or '.join(suffixes)}")
    parent = path if kind == "folder" and path.is_dir() else path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{what} {path} lies under {parent}, which is a file, not a folder; choose "
                        "another path")
    probe = parent / f".latentdiff-probe.{os.getpid()}{TMP_SUFFIX}"
    try:  # a real write: permission bits do not tell for root, read-only mounts or /proc
        probe.open("x").close()
        probe.unlink()
    except OSError as e:
        raise UserError(f"{what} {path} cannot be written: {parent} is not writable "
                        f"({e.strerror}); choose another folder") from None
    return path


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name the same existing file (also through links or another spelling)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
