"""Private temporary folders that a killed process does not leave behind for good.

`temporary_folder("unpack")` makes `$TMPDIR/flambe-compat-unpack-<pid>-XXXXXXXX` and
removes it when the block ends. A process killed inside the block (SIGKILL, the OOM
killer in the middle of unpacking a 400 MiB tar.gz) never reaches that cleanup, so
every new temporary folder first sweeps away those of processes that are no longer
alive. The pid in the name is what tells; a process that has exited but is not reaped
yet (a zombie) counts as dead, since it will never write again.

Limits: liveness is judged by pid on this machine's process table, so processes of
another pid namespace sharing the same temp folder look dead (as for the scratch
folders of `publish`, which share `process_alive`).

>>> with temporary_folder("doc") as folder:
...     folder.name.startswith(f"flambe-compat-doc-{os.getpid()}-")
True
>>> folder.exists()
False
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

_NAME = re.compile(r"^flambe-compat-(?P<kind>[a-z]+)-(?P<pid>\d+)-[A-Za-z0-9_]+$")


@contextlib.contextmanager
def temporary_folder(kind: str) -> Iterator[Path]:
    """A new private folder in the temp dir for the time of the block.

    `kind` (lowercase letters) says what it is for, in its name.
    """
    if not kind.isalpha() or not kind.islower():
        raise ValueError(f"a temporary folder's kind is lowercase letters, not {kind!r}")
    parent = Path(tempfile.gettempdir())
    sweep_dead(parent)
    folder = Path(tempfile.mkdtemp(prefix=f"flambe-compat-{kind}-{os.getpid()}-", dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def sweep_dead(parent: Path) -> None:
    """Remove the temporary folders in `parent` whose processes are no longer alive."""
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return
    for entry in entries:
        match = _NAME.match(entry.name)
        if match and entry.is_dir(follow_symlinks=False) and not process_alive(int(match["pid"])):
            shutil.rmtree(entry.path, ignore_errors=True)


def process_alive(pid: int) -> bool:
    """Whether the process `pid` exists on this machine and can still run."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """Whether `pid` has exited but is not reaped yet (its parent was killed too, and the
    machine's init has not collected it): `kill(pid, 0)` still finds it, but it will
    never write again. Linux's `/proc` tells; elsewhere a found process counts as alive."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return status.rpartition(")")[2].split()[:1] == ["Z"]
