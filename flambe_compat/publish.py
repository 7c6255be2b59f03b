"""Publishing a finished archive atomically: it appears at its path complete or not at all.

Writers build the archive in a private temporary folder beside the target (same file
system, so the final step is a rename), then call `publish`. An existing archive being
overwritten stays intact until the new one is complete. Temporary folders left by a
process that died are swept away by the next save to the same place.

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
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

_TEMP_MARK = ".flambe-compat-"
_TEMP_NAME = re.compile(r"\.flambe-compat-(?:tmp|old)-(\d+)-[A-Za-z0-9_]+$")


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
    """Move the finished archive `built` to `target` in one rename (two when replacing a folder)."""
    check_target(target, overwrite)
    if target.is_dir() and not target.is_symlink() and any(target.iterdir()):
        retired = target.with_name(
            f".{target.name}{_TEMP_MARK}old-{os.getpid()}-{uuid.uuid4().hex}"
        )
        os.rename(target, retired)
        try:
            os.rename(built, target)
        except OSError:
            os.rename(retired, target)
            raise
        shutil.rmtree(retired, ignore_errors=True)
    elif target.is_dir() and not target.is_symlink():
        if built.is_dir():
            os.replace(built, target)
        else:
            target.rmdir()
            os.rename(built, target)
    elif built.is_dir() and (target.exists() or target.is_symlink()):
        target.unlink()
        os.rename(built, target)
    else:
        os.replace(built, target)


def sweep_stale(folder: Path) -> None:
    """Remove scratch folders in `folder` left behind by processes that no longer run."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    for entry in entries:
        match = _TEMP_NAME.search(entry.name)
        if match and not _process_alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
