"""Batches: validate or upgrade every archive below a folder or a store prefix, in parallel.

`find_archives_below(prefix)` lists the prefix once (fsspec's `find`: one `os.walk`-like
pass on a disk, one paginated listing on an object store) and picks the archives:
`.tar.gz` and `.pkl` files, and folders holding `protocol_version.txt` or `manifest.json`
(the node folders inside such a folder belong to it). `run_batch` processes them on a
process pool (`executor="local"`) or on Dask (`"dask"` starts a `LocalCluster`,
`"dask://HOST:PORT"` joins a scheduler) and yields one `ArchiveResult` per archive as
each finishes. Workers open the archives themselves; only paths and small result
records travel.

Each archive runs under a memory limit (`RLIMIT_AS` above what the worker already uses)
and a time limit; an archive that kills or hangs its worker is reported `failed` with
the reason, the worker is replaced, and the batch goes on. Store errors that may pass
(connections, timeouts) are retried with exponential backoff a few times. With a
`ledger` (see `flambe_compat.ledger`) every result is recorded as it arrives, and a
rerun skips the archives already done whose size and fingerprint (etag or mtime) have
not changed. Upgrades go through `upgrade` archive by archive, with its guarantees: the
source is untouched unless upgraded in place (then kept as a backup), and the output is
validated before it is published.

>>> [found.relative for found in find_archives_below("fixtures/flambe-corpus/0.4.18-zip")][:3]
['counter-abs.tar.gz', 'counter-dir', 'counter-pkl.pkl']
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import faulthandler
import hashlib
import os
import posixpath
import resource
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import fsspec

from .errors import LoadError
from .layout import COMPRESSED_SUFFIX, MANIFEST_FILE_NAME, PICKLE_SUFFIX, PROTOCOL_VERSION_FILE_NAME
from .ledger import Ledger, read_records
from .migrate import LATEST
from .pipeline import validate
from .problems import Problem
from .publish import is_scratch_name, sweep_stale
from .report import Report
from .revisions import Revision
from .scratch import temporary_folder
from .store import StoreError, is_url, scrub, shown
from .upgrade import BACKUP_NAME, upgrade

Operation = Literal["validate", "upgrade", "export"]
Verdict = Literal["valid", "invalid", "upgraded", "current", "exported", "failed"]
"""`current`: already at the target revision, nothing written; `failed`: not judged (a
crash, a limit, a store error), so a rerun tries it again."""
OK_VERDICTS = frozenset({"valid", "upgraded", "current", "exported"})
OPERATIONS: tuple[Operation, ...] = get_args(Operation)
EXPORT_FORMATS = ("safetensors", "torch", "dcp")

_ARCHIVE_SUFFIXES = (COMPRESSED_SUFFIX, PICKLE_SUFFIX)
_FOLDER_MARKERS = (PROTOCOL_VERSION_FILE_NAME, MANIFEST_FILE_NAME)
_ETAG_KEYS = ("ETag", "etag", "md5Hash", "md5")
_MTIME_KEYS = ("mtime", "LastModified", "last_modified", "updated", "modified", "created")
_TRANSIENT_ERRNOS = frozenset(
    {errno.EAGAIN, errno.EBUSY, errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNREFUSED}
)
_PERMANENT_STORE_ERRORS = (
    "no such file or directory",
    "access denied",
    "unknown URL scheme",
    "credentials in a URL",
    "pip install",
    "read-only",
)
"""How `StoreError`s that another attempt cannot fix begin or end (the others may pass)."""
DASK_SETTINGS = {
    "distributed.scheduler.allowed-failures": 0,
    "distributed.scheduler.worker-saturation": 1.0,
}
"""The scheduler settings of the LocalCluster we start (give a scheduler of your own the
same): a task whose worker dies fails at once instead of killing more workers, and each
worker holds one task at a time, so no bystander task fails with it."""
_CANNOT_ALLOCATE = ("can't allocate memory", os.strerror(errno.ENOMEM))
_T = TypeVar("_T")


@dataclass(frozen=True)
class Found:
    """An archive found below a prefix."""

    url: str
    """What workers open: a local path, or a URL of the prefix's store."""
    relative: str
    """Its path below the prefix ('/'-separated); empty when the prefix is the archive."""
    size: int
    """Bytes: the file's size, or the sum over a folder archive's files."""
    fingerprint: str
    """Changes when the bytes change: the store's etag, else the modification time; for a
    folder archive a sha256 over its files' names, sizes and etags or times."""


@dataclass(frozen=True)
class Options:
    """What every archive of a batch is processed with."""

    strict: bool = False
    allow_globals: tuple[str, ...] = ()
    to: str = LATEST
    """The revision upgrades go to."""
    export_to: str = "safetensors"
    """The format exports write: `safetensors`, `torch` or `dcp`."""
    max_shard_size: int = 5 * 10**9
    """safetensors shards at most this large."""
    memory_limit: int | None = 4 << 30
    """Bytes of address space an archive may add to its worker's; None: no limit."""
    time_limit: float | None = 900.0
    """Seconds an archive may take before its worker is killed and replaced; None: no limit."""
    retries: int = 3
    """Further attempts after a transient store error, with exponential backoff."""
    backoff: float = 0.5
    """Seconds before the first retry; doubled each time."""


@dataclass
class ArchiveResult:
    """The outcome for one archive: what a ledger line holds."""

    operation: Operation
    path: str
    relative: str
    size: int
    fingerprint: str
    verdict: Verdict
    revision: Revision | None = None
    """The archive's revision as found (before any upgrade)."""
    problems: list[Problem] = field(default_factory=list)
    output: str | None = None
    """Where the upgraded archive is (the source itself for an in-place upgrade)."""
    seconds: float = 0.0
    reason: str | None = None
    """Why a `failed` archive could not be judged, or a note on how it was done."""
    attempts: int = 1
    resumed: bool = False
    """Taken from the ledger of an earlier run, not processed again."""

    @property
    def ok(self) -> bool:
        return self.verdict in OK_VERDICTS

    def as_json(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        record["problems"] = [problem.as_json() for problem in self.problems]
        del record["resumed"]
        return record

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> ArchiveResult:
        """The result a ledger line records; raises `LoadError` for a malformed one."""
        try:
            values = {f.name: record[f.name] for f in dataclasses.fields(cls) if f.name in record}
            values["problems"] = [Problem(**p) for p in record.get("problems", [])]
            result = cls(**values)
        except (TypeError, KeyError) as error:
            raise LoadError(f"a ledger record does not describe an archive ({error})") from None
        if result.operation not in OPERATIONS or result.verdict not in get_args(Verdict):
            raise LoadError(f"a ledger record has an unknown operation or verdict: {record}")
        return result


@dataclass(frozen=True)
class Summary:
    """Counts over a batch: verdicts, revisions, bytes, and the rate of the processed part."""

    archives: int
    processed: int
    resumed: int
    verdicts: dict[str, int]
    revisions: dict[str, int]
    bytes: int
    processed_bytes: int
    seconds: float

    @classmethod
    def of(cls, results: Iterable[ArchiveResult], seconds: float) -> Summary:
        results = list(results)
        processed = [r for r in results if not r.resumed]
        return cls(
            archives=len(results),
            processed=len(processed),
            resumed=len(results) - len(processed),
            verdicts=dict(sorted(Counter(r.verdict for r in results).items())),
            revisions=dict(sorted(Counter(r.revision or "unknown" for r in results).items())),
            bytes=sum(r.size for r in results),
            processed_bytes=sum(r.size for r in processed),
            seconds=seconds,
        )

    @property
    def ok(self) -> bool:
        return all(verdict in OK_VERDICTS for verdict in self.verdicts)

    @property
    def archives_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    @property
    def bytes_per_second(self) -> float:
        return self.processed_bytes / self.seconds if self.seconds > 0 else 0.0

    def render(self) -> str:
        verdicts = ", ".join(f"{count} {verdict}" for verdict, count in self.verdicts.items())
        revisions = ", ".join(f"{rev}: {count}" for rev, count in self.revisions.items())
        resumed = f" ({self.resumed} from the ledger)" if self.resumed else ""
        return (
            f"{self.archives} archives{resumed}: {verdicts or 'none'}\n"
            f"revisions: {revisions or 'none'}\n"
            f"{self.processed} processed, {self.processed_bytes / 1e6:.1f} MB in "
            f"{self.seconds:.1f} s: {self.archives_per_second:.1f} archives/s, "
            f"{self.bytes_per_second / 1e6:.1f} MB/s"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self),
            "archives_per_second": self.archives_per_second,
            "bytes_per_second": self.bytes_per_second,
        }


def find_archives_below(prefix: str, *, skip_backups: bool = False) -> list[Found]:
    """Every archive at or below `prefix` (a local path or a URL), from one listing.

    `skip_backups` leaves out what in-place upgrades keep (`NAME.bak`, `NAME.bak.N`).
    Raises `LoadError` when the prefix does not exist, cannot be listed, or holds none.
    """
    fs, root = _filesystem(prefix)
    try:
        top = fs.info(root)
        listing: dict[str, dict[str, Any]] = (
            fs.find(root, detail=True) if top["type"] == "directory" else {}
        )
    except FileNotFoundError:
        raise LoadError(f"{shown(prefix)}: no such file or directory") from None
    except OSError as error:
        raise LoadError(f"{shown(prefix)}: cannot list ({scrub(str(error))})") from None
    if top["type"] != "directory":
        return [Found(prefix, "", int(top.get("size") or 0), _fingerprint(top))]
    files = {_relative(root, path): info for path, info in listing.items()}
    folders = _archive_folders(files)
    if "" in folders:  # the prefix is itself a folder archive
        return [Found(prefix, "", *_folder_identity(files.items()))]
    found: dict[str, Found] = {}
    members: dict[str, list[tuple[str, dict[str, Any]]]] = {folder: [] for folder in folders}
    for relative, info in files.items():
        owner = _owner(relative, folders)
        if owner is not None:
            members[owner].append((relative, info))
        elif relative.endswith(_ARCHIVE_SUFFIXES) and _wanted(relative, skip_backups):
            found[relative] = Found(
                _join(prefix, relative), relative, int(info.get("size") or 0), _fingerprint(info)
            )
    for folder, content in members.items():
        if _wanted(folder, skip_backups):
            found[folder] = Found(_join(prefix, folder), folder, *_folder_identity(content))
    if not found:
        raise LoadError(f"{shown(prefix)}: no flambe archive found below it")
    return [found[relative] for relative in sorted(found)]


def _filesystem(prefix: str) -> tuple[fsspec.AbstractFileSystem, str]:
    try:
        fs, root = fsspec.core.url_to_fs(prefix)
    except (ValueError, ImportError) as error:
        raise LoadError(f"{shown(prefix)}: cannot open this store ({scrub(str(error))})") from None
    return fs, root.rstrip("/") or root


def _relative(root: str, path: str) -> str:
    return posixpath.relpath(path, root) if path != root else ""


def _archive_folders(files: dict[str, dict[str, Any]]) -> set[str]:
    """Folders that are archives: those with a marker file, not inside another one."""
    marked = sorted(
        {posixpath.dirname(path) for path in files if posixpath.basename(path) in _FOLDER_MARKERS}
    )
    outermost: set[str] = set()
    for folder in marked:
        if _owner(folder, outermost) is None:
            outermost.add(folder)
    return outermost


def _owner(path: str, folders: set[str]) -> str | None:
    """The folder of `folders` that `path` lies in (or is), if any."""
    if "" in folders:
        return ""
    current = path
    while current:
        if current in folders:
            return current
        current = posixpath.dirname(current)
    return None


def _wanted(relative: str, skip_backups: bool) -> bool:
    parts = relative.split("/")
    if any(is_scratch_name(part) for part in parts):
        return False  # a save or upgrade under way (or killed) in that folder
    return not (skip_backups and any(BACKUP_NAME.search(part) for part in parts))


def _join(prefix: str, relative: str) -> str:
    return prefix.rstrip("/") + "/" + relative


def _fingerprint(info: dict[str, Any]) -> str:
    for key in _ETAG_KEYS:
        if info.get(key):
            return f"etag:{str(info[key]).strip(chr(34))}"
    for key in _MTIME_KEYS:
        if info.get(key) is not None:
            return f"mtime:{info[key]}"
    return f"size:{info.get('size')}"


def _folder_identity(content: Iterable[tuple[str, dict[str, Any]]]) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    for relative, info in sorted(content, key=lambda item: item[0]):
        size += int(info.get("size") or 0)
        digest.update(f"{relative}\0{info.get('size')}\0{_fingerprint(info)}\n".encode())
    return size, f"tree:{digest.hexdigest()}"


def run_batch(
    operation: Operation,
    source: str,
    destination: str | None = None,
    *,
    options: Options | None = None,
    executor: str = "local",
    jobs: int | None = None,
    ledger: str | os.PathLike[str] | None = None,
    on_start: Callable[[int, int], None] | None = None,
) -> Iterator[ArchiveResult]:
    """Process every archive below `source`; yields each result as it arrives.

    `destination` mirrors the layout below `source`: upgrades keep each archive's name
    (without a destination they are in place); exports go to a local folder, named
    without the archive suffix (`m.tar.gz` -> `m`, `m.pt` for `torch`). `executor` is
    `local`, `dask` or `dask://ADDRESS`; `jobs` the number of workers of a local pool or
    `LocalCluster` (default: the CPU count). With a `ledger`, results already recorded
    for unchanged archives are yielded again with `resumed=True` and not processed.
    `on_start(archives, bytes)` is told what is left to process before it starts.
    Raises `LoadError` for a source without archives, an unusable destination or
    executor, or a malformed ledger, before any archive is processed.
    """
    options = options or Options()
    if operation not in OPERATIONS:
        raise ValueError(f"unknown operation {operation!r}; one of {', '.join(OPERATIONS)}")
    if destination is not None and operation == "validate":
        raise LoadError("validate writes nothing: it takes no destination")
    if operation == "export" and (destination is None or is_url(destination)):
        raise LoadError("a batch export writes to a local folder: give one as DST")
    if operation == "export" and options.export_to not in EXPORT_FORMATS:
        raise LoadError(f"unknown export format {options.export_to!r}")
    if destination is not None and _inside(destination, source):
        raise LoadError(f"{destination}: inside the source {source}; choose another destination")
    run = _executor(executor, jobs if jobs is not None else os.cpu_count() or 1)
    found = find_archives_below(source, skip_backups=operation != "validate")
    done = _previous_results(Path(ledger), operation) if ledger is not None else {}
    pending: list[_Job] = []
    for archive in found:
        output = _output(operation, archive, destination, options)
        previous = done.get(archive.url)
        if previous is not None and _still_done(previous, archive, output):
            yield dataclasses.replace(previous, resumed=True)
            continue
        pending.append(_Job(operation, archive, output, options))
    _refuse_shared_outputs(pending)
    if on_start is not None:
        on_start(len(pending), sum(job.archive.size for job in pending))
    with (
        Ledger(Path(ledger)) if ledger is not None else contextlib.nullcontext() as book,
        temporary_folder("batch") as scratch,
    ):
        # temporary files of a worker killed mid-archive stay in here, removed at the end
        for result in run(
            [dataclasses.replace(job, scratch=os.fspath(scratch)) for job in pending]
        ):
            if book is not None:
                book.append(result.as_json())
            yield result


def _still_done(previous: ArchiveResult, archive: Found, output: str | None) -> bool:
    """Whether a ledger record stands: a final verdict on the same bytes, and for an
    upgrade or export, written where this run would write it."""
    if previous.verdict == "failed":
        return False
    if (previous.size, previous.fingerprint) != (archive.size, archive.fingerprint):
        return False
    written = previous.verdict in ("upgraded", "current", "exported")
    return not written or previous.output == (archive.url if output is None else output)


def _output(
    operation: Operation, archive: Found, destination: str | None, options: Options
) -> str | None:
    if destination is None or not archive.relative:
        return destination  # in place, or one archive: the destination as given
    if operation != "export":
        return _join(destination, archive.relative)
    name = archive.relative.removesuffix(COMPRESSED_SUFFIX).removesuffix(PICKLE_SUFFIX)
    return _join(destination, name + (".pt" if options.export_to == "torch" else ""))


def _refuse_shared_outputs(jobs: list[_Job]) -> None:
    """Two archives may not write one output (`m.pkl` and `m.tar.gz` both export to `m`)."""
    claimed: dict[str, str] = {}
    for job in jobs:
        if job.destination is None:
            continue
        other = claimed.setdefault(job.destination, job.archive.url)
        if other != job.archive.url:
            raise LoadError(
                f"{shown(other)} and {shown(job.archive.url)} would both be written to "
                f"{shown(job.destination)}; process them separately"
            )


def _inside(destination: str, source: str) -> bool:
    outer = source.rstrip("/") + "/"
    if "://" not in destination and "://" not in source:
        outer = os.path.abspath(source) + os.sep
        destination = os.path.abspath(destination)
    return (destination.rstrip("/") + "/").startswith(outer)


def _previous_results(path: Path, operation: Operation) -> dict[str, ArchiveResult]:
    """The latest record of each archive for `operation` in the ledger at `path`."""
    latest: dict[str, ArchiveResult] = {}
    for record in read_records(path):
        if record.get("operation") == operation:
            result = ArchiveResult.from_json(record)
            latest[result.path] = result
    return latest


# --- executors: each maps jobs to results, in the order they finish ---

Executor = Callable[[list["_Job"]], Iterator[ArchiveResult]]


def _executor(spec: str, workers: int) -> Executor:
    if workers < 1:
        raise LoadError("the number of workers must be positive")
    if spec == "local":
        return lambda jobs: _run_local(jobs, workers)
    if spec == "dask" or spec.startswith("dask://"):
        address = spec.removeprefix("dask").removeprefix("://") or None
        if address is not None and "://" not in address:
            address = f"tcp://{address}"
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise LoadError(
                "the dask executor needs `distributed`: pip install 'flambe-compat[dask]'"
            ) from None
        return lambda jobs: _run_dask(jobs, workers, address)
    raise LoadError(f"unknown executor {spec!r}: use local, dask or dask://HOST:PORT")


def _run_local(jobs: list[_Job], workers: int) -> Iterator[ArchiveResult]:
    """A process pool (`concurrent.futures`), at most one archive in flight per worker.

    Each worker enforces the time limit itself (the watchdog). A worker that dies breaks
    the pool: it is replaced by a fresh one, and the archives that were in flight run
    again one at a time, each alone in a pool of its own, so the one that killed its
    worker is found and reported `failed`, and the others complete.
    """
    if not jobs:
        return
    size = min(workers, len(jobs))
    waiting = [dataclasses.replace(job, watchdog=True) for job in reversed(jobs)]
    pool = _pool(size)
    running: dict[Future[ArchiveResult], _Job] = {}
    try:
        while waiting or running:
            while waiting and len(running) < size:
                job = waiting.pop()
                running[pool.submit(_process, job)] = job
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            suspects = []
            for future in done:
                job = running.pop(future)
                try:
                    yield future.result()
                except BrokenProcessPool:
                    suspects.append(job)
            if suspects:  # every archive in flight fails with the pool: which one broke it?
                suspects += running.values()
                running.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                for job in suspects:
                    yield _alone(job)
                pool = _pool(size)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=workers)


def _alone(job: _Job) -> ArchiveResult:
    """`job` in a pool of its own: its result, or why its worker died."""
    pool = _pool(1)
    started = time.monotonic()
    try:
        return pool.submit(_process, job).result()
    except BrokenProcessPool:
        limit = job.options.time_limit
        if limit is not None and time.monotonic() - started >= limit:
            return job.failed(f"over its time limit of {limit:g} s; the worker was replaced")
        return job.failed(
            "its worker process died (a crash, a kill, or over the memory limit); "
            "the worker was replaced"
        )
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _run_dask(jobs: list[_Job], workers: int, address: str | None) -> Iterator[ArchiveResult]:
    """Dask distributed: a task whose worker dies fails at once (no retry elsewhere), the
    nanny starts a new worker, and one task runs per worker so no bystander fails with it."""
    import logging

    import dask
    from distributed import Client, KilledWorker, LocalCluster
    from distributed import as_completed as dask_completed

    if not jobs:
        return
    with contextlib.ExitStack() as stack:
        stack.enter_context(dask.config.set(DASK_SETTINGS))
        if address is None:
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=min(workers, len(jobs)),
                    threads_per_worker=1,
                    processes=True,
                    memory_limit=0,  # each archive has its own limit
                    dashboard_address=":0",  # a free port, no warning about 8787
                    silence_logs=logging.CRITICAL,
                )
            )
            client = stack.enter_context(Client(cluster))
        else:
            try:
                client = stack.enter_context(Client(address, timeout=30))
            except OSError as error:
                raise LoadError(f"{address}: cannot reach the Dask scheduler ({error})") from None
        # one graph for all: the scheduler then queues them as root tasks and hands each
        # worker one at a time (tasks submitted one by one may be sent ahead to workers)
        watched = [dataclasses.replace(job, watchdog=True) for job in jobs]
        futures = dict(zip(client.map(_process, watched, pure=False), jobs, strict=True))
        for future in dask_completed(list(futures)):
            job = futures.pop(future)
            try:
                yield future.result()
            except KilledWorker:
                yield job.failed(
                    "its worker process died (a crash, a kill, or over the memory or time "
                    "limit); the worker was replaced"
                )
            except Exception as error:  # a task that could not even start or return
                yield job.failed(f"{type(error).__name__}: {error}")
            finally:
                future.release()


# --- the worker side ---


@dataclass(frozen=True)
class _Job:
    operation: Operation
    archive: Found
    destination: str | None
    options: Options
    watchdog: bool = False
    """Enforce the time limit inside the worker (neither executor has task timeouts)."""
    scratch: str | None = None
    """The batch's folder for temporary files (on the client's machine)."""

    def result(self, verdict: Verdict, **details: Any) -> ArchiveResult:
        archive = self.archive
        return ArchiveResult(
            self.operation,
            archive.url,
            archive.relative,
            archive.size,
            archive.fingerprint,
            verdict,
            **details,
        )

    def failed(self, reason: str) -> ArchiveResult:
        return self.result("failed", reason=reason)


def _process(job: _Job) -> ArchiveResult:
    """Run one job in a worker: limits, retries, and every error turned into a result."""
    started = time.monotonic()
    attempts = [0]

    def attempt() -> ArchiveResult:
        attempts[0] += 1
        return _OPERATIONS[job.operation](job)

    try:
        with (
            _temporary_files_in(job.scratch),
            _limits(job.options.memory_limit, job.options.time_limit if job.watchdog else None),
        ):
            result = _retrying(attempt, job.options.retries, job.options.backoff)
    except Exception as error:  # the isolation boundary: one archive's error is its result
        result = job.failed(_reason(error, job.options))
    result.seconds = round(time.monotonic() - started, 6)
    result.attempts = attempts[0]
    return result


def _reason(error: Exception, options: Options) -> str:
    """Why `error` stopped an archive; running out of memory is said so, whatever raised it
    (Python's MemoryError, torch's RuntimeError, ENOMEM from a read wrapped in a LoadError)."""
    text = scrub(str(error))
    if isinstance(error, MemoryError) or any(mark in text for mark in _CANNOT_ALLOCATE):
        return f"over its memory limit of {options.memory_limit} bytes ({text or 'MemoryError'})"
    kind = "store error" if isinstance(error, StoreError) else type(error).__name__
    return f"{kind}: {text}"


def _retrying(action: Callable[[], _T], retries: int, backoff: float) -> _T:
    """`action()`, tried again after transient errors, `retries` times at most."""
    for attempt in range(retries + 1):
        try:
            return action()
        except Exception as error:
            if attempt == retries or not _transient(error):
                raise
        time.sleep(backoff * 2**attempt)
    raise AssertionError("unreachable")  # the loop returns or raises


def _transient(error: BaseException) -> bool:
    if isinstance(error, StoreError):
        return not any(marker in str(error) for marker in _PERMANENT_STORE_ERRORS)
    if isinstance(error, ConnectionError | TimeoutError):
        return True
    return isinstance(error, OSError) and error.errno in _TRANSIENT_ERRNOS


@contextlib.contextmanager
def _temporary_files_in(scratch: str | None) -> Iterator[None]:
    """Point `tempfile` at a private folder in the batch's scratch folder for one archive
    (on a worker of another machine, where that folder is not, leave it alone)."""
    if scratch is None or not os.path.isdir(scratch):
        yield
        return
    previous = tempfile.tempdir
    tempfile.tempdir = tempfile.mkdtemp(prefix="archive-", dir=scratch)
    try:
        yield
    finally:
        shutil.rmtree(tempfile.tempdir, ignore_errors=True)
        tempfile.tempdir = previous


@contextlib.contextmanager
def _limits(memory: int | None, seconds: float | None) -> Iterator[None]:
    """Cap the address space at what the process uses plus `memory`; after `seconds` the
    process exits (a watchdog thread that the GIL or C code cannot block)."""
    previous = resource.getrlimit(resource.RLIMIT_AS)
    used = _address_space() if memory is not None else None
    if memory is not None and used is not None:
        hard = previous[1]
        soft = used + memory
        resource.setrlimit(resource.RLIMIT_AS, (soft if hard < 0 else min(soft, hard), hard))
    if seconds is not None:
        faulthandler.dump_traceback_later(seconds, exit=True, file=_null())
    try:
        yield
    finally:
        if seconds is not None:
            faulthandler.cancel_dump_traceback_later()
        if used is not None:
            resource.setrlimit(resource.RLIMIT_AS, previous)


def _address_space() -> int | None:
    """The bytes of address space this process uses; None where /proc does not tell
    (there the memory limit is not applied)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return None


_NULL: list[Any] = []


def _null() -> Any:
    """A file for faulthandler's traceback of a hung archive (kept open: it writes late)."""
    if not _NULL:
        _NULL.append(open(os.devnull, "w"))  # noqa: SIM115
    return _NULL[0]


def _validate(job: _Job) -> ArchiveResult:
    report = validate(
        job.archive.url, strict=job.options.strict, allow_globals=job.options.allow_globals
    )
    _raise_store_problem(report)
    verdict: Verdict = "valid" if report.valid else "invalid"
    return job.result(verdict, revision=report.revision, problems=report.problems)


def _raise_store_problem(report: Report) -> None:
    """A store that could not be read is an error to retry, not a verdict on the archive."""
    for problem in report.problems:
        if problem.rule == "store":
            raise StoreError(f"{report.source}: {problem.message}")


def _upgrade(job: _Job) -> ArchiveResult:
    source = job.archive.url
    target = job.destination
    if target is not None:
        _sweep_beside(target)
    if target is not None and _exists(target):
        return _already_upgraded(job, target)
    try:
        done = upgrade(source, target, to=job.options.to)
    except StoreError:
        raise
    except (LoadError, ValueError) as error:
        report = validate(source, allow_globals=job.options.allow_globals)
        _raise_store_problem(report)
        if report.valid:  # a valid archive that could not be upgraded (a limit, a migration)
            return job.result(
                "failed", revision=report.revision, reason=_reason(error, job.options)
            )
        problems = report.problems or [Problem("", "upgrade", str(error))]
        return job.result("invalid", revision=report.revision, problems=problems)
    # the upgrade writes the archive where it was asked to, under the same name
    return job.result(
        "upgraded" if done.destination is not None else "current",
        revision=done.source_revision,
        output=source if target is None else target,
    )


def _sweep_beside(target: str) -> None:
    """A worker killed between publishing its output and removing its scratch folder left
    that folder beside the output; a rerun that finds the output done writes nothing there,
    so it sweeps here rather than in the next save."""
    if not is_url(target):
        sweep_stale(Path(target).parent)


def _exists(path: str) -> bool:
    fs, inner = _filesystem(path)
    return bool(fs.exists(inner))


def _already_upgraded(job: _Job, target: str) -> ArchiveResult:
    """An output already there: an earlier run's (killed before its ledger line) if it is
    a valid archive of the target revision, which is only published once validated."""
    report = validate(target)
    _raise_store_problem(report)
    if not (report.valid and report.revision == job.options.to):
        return job.failed(f"{shown(target)}: already exists and is not this archive upgraded")
    source = validate(job.archive.url, allow_globals=job.options.allow_globals)
    _raise_store_problem(source)
    return job.result(
        "upgraded",
        revision=source.revision,
        output=target,
        reason="the output was already there, valid and at the target revision",
    )


def _export(job: _Job) -> ArchiveResult:
    from .export import ExportError, export

    source = job.archive.url
    target = str(job.destination)
    _sweep_beside(target)
    if os.path.lexists(target):
        return _already_exported(job, target)
    try:
        export(
            source,
            target,
            to=job.options.export_to,  # type: ignore[arg-type]  # checked by `run_batch`
            max_shard_size=job.options.max_shard_size,
            allow_globals=job.options.allow_globals,
        )
    except StoreError:
        raise
    except (LoadError, ExportError) as error:
        report = validate(source, allow_globals=job.options.allow_globals)
        _raise_store_problem(report)
        if report.valid:  # a state the format cannot hold, or a limit
            return job.result(
                "failed", revision=report.revision, reason=_reason(error, job.options)
            )
        return job.result("invalid", revision=report.revision, problems=report.problems)
    report = validate(source, allow_globals=job.options.allow_globals)
    return job.result("exported", revision=report.revision, output=target)


def _already_exported(job: _Job, target: str) -> ArchiveResult:
    """An export is published whole once it was read back and compared, so one already
    at its path is an earlier run's (killed before its ledger line) when it has the
    files of its format."""
    marker = {"safetensors": "model.safetensors", "dcp": ".metadata"}.get(job.options.export_to)
    path = Path(target)
    complete = path.is_file() if marker is None else any(path.glob(marker + "*"))
    if not complete:
        return job.failed(f"{target}: already exists and is not a {job.options.export_to} export")
    report = validate(job.archive.url, allow_globals=job.options.allow_globals)
    _raise_store_problem(report)
    return job.result(
        "exported",
        revision=report.revision,
        output=target,
        reason="the output was already there",
    )


_OPERATIONS: dict[Operation, Callable[[_Job], ArchiveResult]] = {
    "validate": _validate,
    "upgrade": _upgrade,
    "export": _export,
}
