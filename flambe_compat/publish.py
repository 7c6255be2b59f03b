"""Publishing a finished archive atomically: it appears at its path complete or not at all.

Writers build the archive in a private scratch folder beside the target (same file
system, so the final step is a rename), then call `publish`:

- nothing at the target (or an empty folder): one rename that refuses to replace
  anything (Linux `renameat2(RENAME_NOREPLACE)`; elsewhere a folder rename, which cannot
  replace a non-empty folder, or a hard link for a file). A concurrent writer that got
  there first wins, and this one raises flambe's `ValueError` unless `overwrite=True`;
- an existing archive with `overwrite=True`: on Linux the new and old archives swap
  places in one `renameat2(RENAME_EXCHANGE)` and the old one is deleted with the
  scratch folder; elsewhere a file replaces a file in one `os.replace`, and other
  cases take two renames (the old archive moves aside, the new one moves in).

So a killed save leaves the target as it was, and two concurrent saves leave one
complete archive, never a mix. An in-place upgrade publishes with
`exchange_keeping_backup`: one exchange puts the new archive at the target, and the old
one moves on to a free backup name (`NAME.bak`, `NAME.bak.1`, ...); if the process dies
between the two, the next sweep recognises the old archive in its scratch folder (by the
inode recorded before the exchange) and moves it to the backup name.

Scratch folders of processes that died are swept away by the next save to the same
folder, and an old archive left aside by an interrupted two-rename replacement is put
back if nothing took its place. Renames are atomic
against crashes of the process, not power loss: nothing is fsynced (as `torch.save`).

>>> import tempfile, pathlib
>>> target = pathlib.Path(tempfile.mkdtemp()) / "m.pkl"
>>> with staging(target) as scratch:
...     _ = (scratch / "m.pkl").write_bytes(b"data")
...     publish(scratch / "m.pkl", target, overwrite=False)
>>> target.read_bytes()
b'data'
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from .scratch import process_alive

_TEMP_MARK = ".flambe-compat-"
_TEMP_NAME = re.compile(
    r"^\.(?P<target>.+)\.flambe-compat-(?P<kind>tmp|old)-(?P<pid>\d+)-[A-Za-z0-9_]+$"
)
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP}
_RACES = {errno.EEXIST, errno.ENOENT, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR}
"""What a rename raises when another process changed the target meanwhile."""
_ATTEMPTS = 20
_EXCHANGE_RECORD = ".flambe-compat-exchange.json"
"""In a scratch folder: what `exchange_keeping_backup` is exchanging, for the sweep."""


def check_target(target: Path, overwrite: bool) -> None:
    """flambe's rule: an existing file or non-empty folder needs `overwrite=True`."""
    if target.is_dir() and not target.is_symlink():
        contents = sorted(os.listdir(target))
        if contents and not overwrite:
            raise ValueError(
                f"The given path ({target}) points to an existing directory containing "
                f"files:\n{contents}\nPlease use a new path, or an existing directory "
                "without files, or specify overwrite=True."
            )
    elif (target.exists() or target.is_symlink()) and not overwrite:
        raise ValueError(
            f"The given path ({target}) points to an existing file. Specify "
            "overwrite=True to overwrite the file with a save file / dir."
        )


@contextlib.contextmanager
def staging(target: Path) -> Iterator[Path]:
    """A private scratch folder beside `target`, removed when the block ends."""
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(target.parent)
    scratch = Path(
        tempfile.mkdtemp(prefix=f".{target.name}{_TEMP_MARK}tmp-{os.getpid()}-", dir=target.parent)
    )
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def publish(built: Path, target: Path, overwrite: bool) -> None:
    """Move the finished archive `built` (in a scratch folder) to `target` atomically.

    With `overwrite=True` an existing archive may end up at `built`, to be deleted with
    the scratch folder. Raises `ValueError` when `target` holds an archive (maybe one a
    concurrent writer just published) and `overwrite` is false.
    """
    for _ in range(_ATTEMPTS):
        try:
            if not os.path.lexists(target):
                _rename_noreplace(built, target)
            elif _is_empty_folder(target):
                _replace_empty_folder(built, target)
            else:
                check_target(target, overwrite)
                _swap(built, target)
            return
        except OSError as error:
            if error.errno not in _RACES:
                raise
    raise OSError(errno.EAGAIN, f"{target} kept changing while publishing {built}")


def _is_empty_folder(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def _rename_noreplace(source: Path, target: Path) -> None:
    """Rename `source` to the free `target`; raises if something took that place meanwhile
    (the portable fallback lets a folder replace an empty folder, which flambe allows)."""
    if _renameat2(source, target, _RENAME_NOREPLACE):
        return
    if source.is_dir():
        os.rename(source, target)  # refuses a file or a non-empty folder
    else:
        os.link(source, target)  # refuses anything in the way
        os.unlink(source)


def _replace_empty_folder(built: Path, target: Path) -> None:
    """flambe saves into an existing empty folder; fails if someone fills it meanwhile."""
    if built.is_dir():
        os.rename(built, target)
    else:
        target.rmdir()
        _rename_noreplace(built, target)


def _swap(built: Path, target: Path) -> None:
    """Put `built` at the existing `target`, atomically where the system allows."""
    if _renameat2(built, target, _RENAME_EXCHANGE):
        return
    if not built.is_dir() and not target.is_dir():
        os.replace(built, target)
        return
    retired = target.with_name(f".{target.name}{_TEMP_MARK}old-{os.getpid()}-{uuid.uuid4().hex}")
    os.rename(target, retired)
    try:
        _rename_noreplace(built, target)
    finally:
        _restore(retired, target)


def _restore(retired: Path, target: Path) -> None:
    """Put an old archive moved aside back at `target`, or drop it if `target` is taken."""
    try:
        _rename_noreplace(retired, target)
    except OSError:
        _remove(retired)


def free_backup_name(target: Path) -> Path:
    """`NAME.bak`, or `NAME.bak.1`, `.2`... : the first that does not exist yet."""
    candidate = target.with_name(target.name + ".bak")
    number = 0
    while os.path.lexists(candidate):
        number += 1
        candidate = target.with_name(f"{target.name}.bak.{number}")
    return candidate


def exchange_keeping_backup(built: Path, target: Path) -> Path:
    """Put `built` (in a scratch folder of `staging(target)`) at the existing `target` in
    one atomic exchange, and keep the old archive as a backup; returns the backup's path.

    Before the exchange, the scratch folder records the old archive's inode: a sweep
    after a crash moves the old archive to a backup name instead of deleting it.
    """
    record = built.parent / _EXCHANGE_RECORD
    record.write_text(json.dumps({"name": built.name, "inode": target.lstat().st_ino}))
    if _renameat2(built, target, _RENAME_EXCHANGE):
        return _keep_backup(built, target)
    backup = _keep_backup(target, target)  # no exchange here: two renames
    _rename_noreplace(built, target)
    return backup


def _keep_backup(old: Path, target: Path) -> Path:
    """Move the old archive `old` to the first free backup name of `target`."""
    for _ in range(_ATTEMPTS):
        backup = free_backup_name(target)
        try:
            _rename_noreplace(old, backup)
            return backup
        except OSError as error:
            if error.errno not in _RACES:
                raise
    raise OSError(errno.EAGAIN, f"no free backup name for {target}")


def _renameat2_function() -> Callable[..., int] | None:
    if sys.platform != "linux":
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a libc without renameat2 (glibc < 2.28, musl < 1.2.0)
        return None
    function.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    function.restype = ctypes.c_int
    return function


_RENAMEAT2 = _renameat2_function()


def _renameat2(source: Path, target: Path, flags: int) -> bool:
    """Linux `renameat2`; False when this system or file system does not support `flags`."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), os.fspath(source), None, os.fspath(target))


def is_scratch_name(name: str) -> bool:
    """Whether `name` is a scratch folder of a save, or an old archive set aside by one."""
    return _TEMP_NAME.match(name) is not None


def sweep_stale(folder: Path) -> None:
    """Clean up after processes that died while saving into `folder`.

    Their scratch folders are removed; an old archive they had moved aside is put back
    if its path is still free.
    """
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if not match or process_alive(int(match["pid"])):
            continue
        if match["kind"] == "old":
            _restore(entry, folder / match["target"])
            continue
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            _keep_exchanged(entry, folder / match["target"])
        _remove(entry)


def _keep_exchanged(scratch: Path, target: Path) -> None:
    """A dead `exchange_keeping_backup` may have left the old archive in its scratch
    folder: if so (the inode it recorded), it becomes the backup."""
    record = json.loads((scratch / _EXCHANGE_RECORD).read_text())
    old = scratch / record["name"]
    if old.lstat().st_ino == record["inode"]:
        _keep_backup(old, target)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()
