"""Stores: archives named by a URL (`s3://`, `gs://`, `az://`, `http(s)://`, `hf://`,
`memory://`, `file://`) made local at the edge, so every inner stage sees local files.

`fetched(path)` yields a local path for the time of a block: a local path as it is; a
URL's archive copied through fsspec into a private temporary folder that is always
removed. A folder archive is listed once (one `find` with details); its files, their
number, depth and total size are checked against the tarball caps of
`flambe_compat.container` before a byte is fetched, every download is cut off past its
listed size, and the archive is listed again afterwards: a file that changed (size or
ETag) while it was read is an error, not a silently mixed archive. Over http(s) only
single-file archives (`.tar.gz`, `.pkl`) can be read: a server's folders cannot be
listed.

`staged(path)` is the other direction: a local stand-in that a writer fills, uploaded
when the block ends. A folder goes up payloads first and `manifest.json` last (the
protocol 2 commit marker), so a reader never takes a half-uploaded archive for a
complete one; a single file goes up in one request, which object stores publish whole.
A protocol 1 folder has no commit marker and object stores no atomic rename: it is
refused unless the caller accepts a non-atomic save (`atomic=False`).

Credentials come only from each store's own configuration (environment, config files,
instance metadata); a URL with a user or password is refused, and messages name URLs
without user information or query strings (where signatures live).

>>> redact("https://user:pw@example.org/m.tar.gz?X-Amz-Signature=abc")
'https://example.org/m.tar.gz?<redacted>'
>>> is_url("s3://bucket/model"), is_url("models/m.tar.gz")
(True, False)
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from .container import MAX_DEPTH, MAX_MEMBERS, MAX_UNPACKED_ENV, unpack_cap
from .errors import LoadError
from .layout import MANIFEST_FILE_NAME
from .scratch import temporary_folder


class StoreError(LoadError, OSError):
    """A store could not be used: unknown scheme, missing package, unreachable, access
    denied, or an archive that changed while it was read (an I/O error, CLI exit 2)."""


@dataclass(frozen=True)
class _Scheme:
    package: str
    extra: str
    writable: bool = True
    listable: bool = True


_S3 = _Scheme("s3fs", "s3")
_GCS = _Scheme("gcsfs", "gcs")
_AZURE = _Scheme("adlfs", "azure")
_HTTP = _Scheme("aiohttp", "http", writable=False, listable=False)
_CORE = _Scheme("fsspec", "")
SCHEMES: dict[str, _Scheme] = {
    "s3": _S3,
    "s3a": _S3,
    "gs": _GCS,
    "gcs": _GCS,
    "az": _AZURE,
    "abfs": _AZURE,
    "abfss": _AZURE,
    "http": _HTTP,
    "https": _HTTP,
    "hf": _Scheme("huggingface_hub", "hf"),
    "memory": _CORE,
}
"""The URL schemes read through fsspec, with the package (and extra) each one needs.
`file://` URLs are local paths."""

_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")
_URL_IN_TEXT = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?:[^/\s@'\"]*@)?(?P<rest>[^\s'\"]*)"
)
_SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|_KEY$|SAS", re.IGNORECASE)
_WORKERS = 8
_Job = TypeVar("_Job")
_CHANGED = "changed while it was read"


def is_url(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a URL (`scheme://...`) rather than a local path."""
    return isinstance(path, str) and _URL.match(path) is not None


def redact(url: str) -> str:
    """`url` without user information, query string or fragment: safe to print.

    Azure's `abfs://container@account...` keeps its container, which is no credential.
    """
    parts = urllib.parse.urlsplit(url)
    user, at, host = parts.netloc.rpartition("@")
    if at and _userinfo_is_address(parts.scheme, user):
        host = f"{user}@{host}"
    query = "?<redacted>" if parts.query else ""
    return f"{parts.scheme}://{host}{parts.path}{query}"


def _userinfo_is_address(scheme: str, user: str) -> bool:
    return SCHEMES.get(scheme.lower()) is _AZURE and ":" not in user


def shown(path: str | os.PathLike[str]) -> str:
    """How messages name `path`: a URL redacted, a local path as given."""
    return redact(path) if isinstance(path, str) and is_url(path) else os.fspath(path)


def scrub(text: str) -> str:
    """`text` with every URL in it redacted and the values of credential-like
    environment variables (`*SECRET*`, `*TOKEN*`, `*_KEY`...) blanked out."""

    def url(match: re.Match[str]) -> str:
        rest = match["rest"]
        path, query = rest.split("?", 1) if "?" in rest else (rest, "")
        return match["scheme"] + path.split("#", 1)[0] + ("?<redacted>" if query else "")

    text = _URL_IN_TEXT.sub(url, text)
    for name, value in os.environ.items():
        if len(value) >= 8 and _SECRET_NAME.search(name):
            text = text.replace(value, "<redacted>")
    return text


@contextlib.contextmanager
def fetched(path: str | os.PathLike[str]) -> Iterator[Path]:
    """`path` as a local path for the time of the block (see the module docstring).

    For a URL, `LoadError`s raised in the block name the URL instead of the local copy.
    """
    if not is_url(path):
        yield Path(path)
        return
    url = str(path)
    local_url = _file_url_path(url)
    if local_url is not None:
        yield local_url
        return
    remote = _Remote.parse(url)
    with temporary_folder("download") as scratch:
        local = scratch / remote.name
        remote.download(local)
        try:
            yield local
        except LoadError as error:
            message = str(error).replace(os.fspath(local), remote.shown)
            raise type(error)(message) from None


@dataclass
class Staged:
    """Where a writer puts the archive for `staged`, and where it went."""

    path: Path
    """The writer's target (suffixes such as `.tar.gz` may be added to its name)."""
    final: str | None = None
    """A remote target: the URL (redacted) the archive was uploaded to."""
    backup: str | None = None
    """With `backup=True`: the URL (redacted) the replaced archive was copied to."""


@contextlib.contextmanager
def staged(
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    atomic: bool = True,
    backup: bool = False,
) -> Iterator[Staged]:
    """A target for a writer: `path` itself when local, else a local stand-in in a
    private temporary folder whose result is uploaded beside the URL when the block ends.

    The uploaded archive keeps the name the writer gave it (`m` -> `m.tar.gz`). An
    existing remote archive raises flambe's `ValueError` unless `overwrite=True`; with
    `backup=True` it is first copied to `NAME.bak` (`NAME.bak.1`, ...). A remote folder
    is replaced by removing the old one (its manifest first) before the upload. A
    protocol 1 folder (no `manifest.json`) raises `ValueError` unless `atomic=False`.
    Store failures raise `StoreError`.
    """
    if not is_url(path):
        yield Staged(Path(path))
        return
    url = str(path)
    local_url = _file_url_path(url)
    if local_url is not None:
        yield Staged(local_url)
        return
    remote = _Remote.parse(url, writing=True)
    with temporary_folder("upload") as scratch:
        target = Staged(scratch / remote.name)
        yield target
        built = [entry for entry in scratch.iterdir() if not entry.name.startswith(".")]
        if len(built) != 1:
            raise StoreError(f"{remote.shown}: the writer left {len(built)} archives to upload")
        destination = remote.sibling(built[0].name)
        target.backup = destination.upload(built[0], overwrite, atomic, backup)
        target.final = destination.shown


def _file_url_path(url: str) -> Path | None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() != "file":
        return None
    if parts.netloc not in ("", "localhost"):
        raise StoreError(f"{redact(url)}: file:// URLs must name a local path")
    return Path(urllib.request.url2pathname(parts.path))


@dataclass(frozen=True)
class _Remote:
    """An archive's URL and the fsspec file system that reaches it."""

    url: str
    shown: str
    scheme: _Scheme
    fs: Any
    path: str

    @classmethod
    def parse(cls, url: str, writing: bool = False) -> _Remote:
        shown = redact(url)
        name = url.split("://", 1)[0].lower()
        scheme = SCHEMES.get(name)
        if scheme is None:
            known = ", ".join(f"{s}://" for s in [*SCHEMES, "file"])
            raise StoreError(f"{shown}: unknown URL scheme {name!r} (known: {known})")
        if writing and not scheme.writable:
            raise StoreError(f"{shown}: {name}:// is read-only; save elsewhere and upload")
        user, at, _ = urllib.parse.urlsplit(url).netloc.rpartition("@")
        if at and not _userinfo_is_address(name, user):
            raise StoreError(
                f"{shown}: credentials in a URL are refused; configure them the way the "
                f"store's own tools ({scheme.package}) read them"
            )
        import fsspec

        try:
            fs, fs_path = fsspec.core.url_to_fs(url)
        except ImportError:
            raise StoreError(
                f"{shown}: {name}:// needs {scheme.package}: "
                f"pip install 'flambe-compat[{scheme.extra}]'"
            ) from None
        except Exception as error:
            raise _store_error(shown, "open the store", error) from None
        return cls(url, shown, scheme, fs, fs_path.rstrip("/") or fs_path)

    @property
    def name(self) -> str:
        """The archive's own name (the last part of the URL's path)."""
        path = urllib.parse.urlsplit(self.url).path.rstrip("/")
        return PurePosixPath(path).name or urllib.parse.urlsplit(self.url).netloc or "archive"

    def sibling(self, name: str) -> _Remote:
        """The URL `name` beside this one (the writer may have added suffixes)."""
        if name == self.name:
            return self
        base = self.url.rstrip("/")
        url = base[: len(base) - len(self.name)] + name
        return _Remote(url, redact(url), self.scheme, self.fs, self.fs._strip_protocol(url))

    def download(self, local: Path) -> None:
        """Copy the archive to `local` (a file or a folder), checked as the module says."""
        listing = self._listing()
        cap = unpack_cap(0)
        total = sum(info.get("size") or 0 for info in listing.values())
        if total > cap:
            raise StoreError(
                f"{self.shown}: holds {total} bytes, more than {cap}; "
                f"set {MAX_UNPACKED_ENV} to allow more"
            )
        for relative in listing:
            (local.joinpath(*relative.split("/")) if relative else local).parent.mkdir(
                parents=True, exist_ok=True
            )
        self._run(
            lambda relative: self._fetch(relative, listing[relative].get("size"), local, cap),
            list(listing),
            "read",
        )
        if _fingerprints(self._listing()) != _fingerprints(listing):
            raise StoreError(f"{self.shown}: {_CHANGED}; read it again")

    def upload(self, built: Path, overwrite: bool, atomic: bool, backup: bool) -> str | None:
        """Put the local archive `built` at this URL; returns the backup's URL, if made."""
        files = sorted(p for p in built.rglob("*") if p.is_file()) if built.is_dir() else [built]
        has_manifest = (built / MANIFEST_FILE_NAME).is_file()
        if built.is_dir() and not has_manifest and atomic:
            raise ValueError(
                f"{self.shown}: a protocol 1 folder cannot be saved atomically to a store "
                "without atomic renames (a reader could see it half-written); pass "
                "atomic=False to accept that, or save with compress=True (one object) or "
                "protocol=2 (its manifest.json is uploaded last)"
            )
        exists = self._exists(self.path)
        if exists and not overwrite:
            raise ValueError(
                f"The given path ({self.shown}) points to an existing archive. Specify "
                "overwrite=True to overwrite it."
            )
        copy = None
        if exists and backup:
            copy = self._free_backup()
            self._attempt(
                "back up the archive", lambda: self.fs.copy(self.path, copy.path, recursive=True)
            )
        if exists and (
            built.is_dir() or self._attempt("check the target", lambda: self.fs.isdir(self.path))
        ):
            self._remove_old()
        relative = [p.relative_to(built).as_posix() if built.is_dir() else "" for p in files]
        payloads = [(f, r) for f, r in zip(files, relative, strict=True) if r != MANIFEST_FILE_NAME]
        try:
            self._run(lambda job: self._put(*job), payloads, "write")
            if has_manifest:
                self._attempt(
                    "write the manifest",
                    lambda: self._put(built / MANIFEST_FILE_NAME, MANIFEST_FILE_NAME),
                )
        except BaseException:
            if not exists:  # what this upload created, and only that
                with contextlib.suppress(Exception):
                    self.fs.rm(self.path, recursive=True)
            raise
        self.fs.invalidate_cache()
        return None if copy is None else copy.shown

    def _listing(self) -> dict[str, dict[str, Any]]:
        """Relative name ('' for a single file) -> fsspec details, in one listing."""
        self.fs.invalidate_cache()
        if not self.scheme.listable:
            if self.url.endswith("/"):
                raise StoreError(
                    f"{self.shown}: folders cannot be read over http(s): "
                    "serve the archive as one .tar.gz or .pkl file"
                )
            info: dict[str, Any] = self._attempt("read", lambda: self.fs.info(self.url))
            if str(info.get("mimetype", "")).startswith("text/html"):
                raise StoreError(
                    f"{self.shown}: an HTML page (a folder listing?); folders cannot be read "
                    "over http(s): serve the archive as one .tar.gz or .pkl file"
                )
            return {"": info}
        found: dict[str, dict[str, Any]] = self._attempt(
            "list", lambda: self.fs.find(self.path, withdirs=False, detail=True)
        )
        if not found:
            raise StoreError(f"{self.shown}: no such file or directory")
        if list(found) == [self.path]:
            return {"": found[self.path]}
        if len(found) > MAX_MEMBERS:
            raise StoreError(f"{self.shown}: more than {MAX_MEMBERS} files")
        listing = {}
        for name, info in found.items():
            if info.get("type") == "directory" or (name.endswith("/") and not info.get("size")):
                continue  # a folder marker some tools create: the files say it all
            relative = name[len(self.path) :].lstrip("/")
            parts = relative.split("/")
            if not name.startswith(self.path + "/") or any(p in ("", ".", "..") for p in parts):
                raise StoreError(f"{self.shown}: the file {relative!r} has an unsafe name")
            if len(parts) > MAX_DEPTH:
                raise StoreError(f"{self.shown}: files lie over {MAX_DEPTH} folders deep")
            listing[relative] = info
        return listing

    def _fetch(self, relative: str, size: int | None, root: Path, cap: int) -> None:
        local = root.joinpath(*relative.split("/")) if relative else root
        name = f"{self.shown}/{relative}" if relative else self.shown
        limit = _limit_class()(name, cap if size is None else size, size is not None)
        self.fs.get_file(self._full(relative), os.fspath(local), callback=limit)
        if size is not None and local.stat().st_size != size:
            raise StoreError(f"{name}: {_CHANGED}; read it again")

    def _put(self, local: Path, relative: str) -> None:
        self.fs.put_file(os.fspath(local), self._full(relative))

    def _exists(self, path: str) -> bool:
        def exists() -> bool:
            self.fs.invalidate_cache()
            return bool(self.fs.exists(path))

        return bool(self._attempt("check the target", exists))

    def _free_backup(self) -> _Remote:
        candidate = self.sibling(self.name + ".bak")
        number = 0
        while self._exists(candidate.path):
            number += 1
            candidate = self.sibling(f"{self.name}.bak.{number}")
        return candidate

    def _remove_old(self) -> None:
        """Remove the archive being replaced: its manifest first, so that it stops being
        a complete archive before any of its files goes."""
        manifest = self._full(MANIFEST_FILE_NAME)
        if self._exists(manifest):
            self._attempt("remove the old manifest", lambda: self.fs.rm_file(manifest))
        self._attempt("remove the old archive", lambda: self.fs.rm(self.path, recursive=True))

    def _full(self, relative: str) -> str:
        return (
            f"{self.path}/{relative}"
            if relative
            else (self.url if not self.scheme.listable else self.path)
        )

    def _attempt(self, action: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except StoreError:
            raise
        except Exception as error:  # any store library's error: I/O at the edge
            raise _store_error(self.shown, action, error) from None

    def _run(self, work: Callable[[_Job], None], jobs: list[_Job], action: str) -> None:
        """`work(job)` for every job, a few at a time (stores answer faster in parallel)."""

        def attempt(job: _Job) -> None:
            self._attempt(action, functools.partial(work, job))

        if len(jobs) <= 1:
            for job in jobs:
                attempt(job)
            return
        with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
            list(pool.map(attempt, jobs))


@functools.cache
def _limit_class() -> type[Any]:
    """`_Limit`, made when first needed: importing fsspec at start-up costs every command."""
    from fsspec.callbacks import Callback

    class _Limit(Callback):  # type: ignore[misc]
        """An fsspec callback that stops a download going past its listed size (or cap)."""

        def __init__(self, name: str, limit: int, exact: bool) -> None:
            super().__init__()
            self.name, self.limit, self.exact = name, limit, exact

        def call(self, *args: Any, **kwargs: Any) -> None:
            if max(self.size or 0, self.value) > self.limit:
                if self.exact:
                    raise StoreError(f"{self.name}: {_CHANGED}; read it again")
                raise StoreError(
                    f"{self.name}: larger than {self.limit} bytes; "
                    f"set {MAX_UNPACKED_ENV} to allow more"
                )

    return _Limit


def _fingerprints(listing: dict[str, dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """What tells a changed file: its size and the store's version marker."""
    keys = (
        "ETag",
        "etag",
        "md5Hash",
        "content_md5",
        "blob_id",
        "LastModified",
        "Last-Modified",
        "mtime",
        "created",
    )
    return {
        name: (info.get("size"), *(str(info[key]) for key in keys if info.get(key) is not None))
        for name, info in listing.items()
    }


def _store_error(shown: str, action: str, error: BaseException) -> StoreError:
    if isinstance(error, FileNotFoundError):
        return StoreError(f"{shown}: no such file or directory")
    if isinstance(error, PermissionError):
        return StoreError(
            f"{shown}: access denied (cannot {action}); check the store's credentials configuration"
        )
    detail = scrub(str(error)) or type(error).__name__
    return StoreError(f"{shown}: cannot {action}: {type(error).__name__}: {detail}")
