"""Bad inputs (DESIGN.md section 6), each built by breaking a copy of a good corpus archive.

`bad_inputs()` lists every case as a `BadInput`: an id, a builder `build(tmp_dir) -> path`
that writes only inside `tmp_dir`, and the fragments the `LoadError` message must contain
(the broken file, and the problem where a stable word names it). Malicious pickles
(`MALICIOUS`) try a visible side effect, creating `tmp_dir / MARKER`; `poison_pickle`
sets the attribute `POISON` on allowed globals. The tests prove that none of it happens.

Cases that break the contract today carry `xfail`: the module at fault and what goes wrong.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import gzip
import io
import marshal
import os
import pickle
import pickletools
import random
import shlex
import shutil
import signal
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import torch

from flambe_compat import load_state_from_file, save_state_to_file
from flambe_compat.compress import gzip_writer
from flambe_compat.container import MAX_MEMBERS
from flambe_compat.layout import NODE_FILES
from tests.corpus import CORPUS

MARKER = "MARKER"
POISON = "flambe_compat_poisoned"
MiB = 1 << 20
GiB = 1 << 30

ZIP_DIR = CORPUS / "0.4.18-zip" / "wrapper-dir"
LEGACY_DIR = CORPUS / "0.4.18-legacy" / "wrapper-dir"
RAW_STASH_DIR = CORPUS / "0.4.3-legacy" / "wrapper-dir"
"""0.4.3 writes `stash.pkl` as a bare pickle: the one place a raw pickle sits in a folder."""
ZIP_TGZ = CORPUS / "0.4.18-zip" / "wrapper-tgz.tar.gz"
ZIP_PKL = CORPUS / "0.4.18-zip" / "wrapper-pkl.pkl"
CHILD = "model/inner"

# Why a case breaks the contract today (module at fault: what goes wrong).
STORAGE_BOMB_VALID = (
    "validate: a state.pt whose tensor record is a zip bomb is reported valid (validation "
    "never looks at tensor records; the load refuses it)"
)
LEGACY_TAIL_VALID = (
    "validate: a legacy state.pt broken after its main pickle (storage keys, tensor bytes) "
    "is reported valid: validation reads the main pickle only; the load refuses it"
)
HASH_COLLISIONS = (
    "unpickle.py: int keys whose hashes collide make building a dict quadratic: 40,000 "
    "keys (1.6 MB of pickle) take minutes, and the C unpickler offers no hook to stop it "
    "(torch's weights_only unpickler has the same flaw)"
)

Builder = Callable[[Path], Path]
Payload = Callable[[Path], bytes]
"""Bytes of a file to plant, from the path of the marker it may try to create."""


@dataclass(frozen=True)
class BadInput:
    """One bad archive: how to build it and what its `LoadError` must say."""

    id: str
    build: Builder
    fragments: tuple[str, ...]
    isolated: bool = False
    """Load it in a subprocess under a timeout and a memory limit (it could crash or hang)."""
    timeout: float = 30.0
    env: tuple[tuple[str, str], ...] = ()
    xfail: str | None = None


class Hang(BaseException):
    """A load outlived its deadline (a BaseException, so that no reader swallows it)."""


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise `Hang` in the block after `seconds`."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def remove_tree(root: Path) -> None:
    """Remove a folder tree without recursion: `shutil.rmtree` recurses on Python 3.11 and
    fails on the 1500-deep trees some cases build (and so would pytest's own cleanup)."""
    pending, folders = [root], []
    while pending:
        folders.append(pending.pop())
        with os.scandir(folders[-1]) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(Path(entry.path))
                else:
                    os.unlink(entry.path)
    for folder in reversed(folders):
        folder.rmdir()


# --- breaking copies of good folders -----------------------------------------------------


def copy_good(source: Path, tmp_dir: Path, name: str | None = None) -> Path:
    """A writable copy of a corpus file or folder inside `tmp_dir`."""
    target = tmp_dir / (name or source.name)
    if source.is_dir():
        shutil.copytree(source, target)
        for path in [target, *target.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    else:
        shutil.copyfile(source, target)
    return target


def edited(source: Path, member: str, edit: Callable[[Path], object]) -> Builder:
    """A builder copying the folder `source`, then applying `edit` to its `member`."""

    def build(tmp_dir: Path) -> Path:
        root = copy_good(source, tmp_dir)
        edit(root / member)
        return root

    return build


def written(data: bytes | str) -> Callable[[Path], object]:
    """An edit replacing a file's content."""
    return lambda path: path.write_bytes(data.encode() if isinstance(data, str) else data)


def truncated(keep: Callable[[int], int]) -> Callable[[Path], object]:
    return lambda path: path.write_bytes(path.read_bytes()[: keep(path.stat().st_size)])


def flipped(offset: Callable[[Path], int], bit: int = 0) -> Callable[[Path], object]:
    def edit(path: Path) -> None:
        data = bytearray(path.read_bytes())
        data[offset(path)] ^= 1 << bit
        path.write_bytes(bytes(data))

    return edit


def removed(*names: str) -> Callable[[Path], object]:
    """An edit removing a file, or the files `names` of a folder."""

    def edit(path: Path) -> None:
        for target in [path / name for name in names] or [path]:
            target.unlink()

    return edit


def file(name: str, data: Callable[[Path], bytes]) -> Builder:
    """A builder writing one file `name` with `data(tmp_dir)`."""

    def build(tmp_dir: Path) -> Path:
        path = tmp_dir / name
        path.write_bytes(data(tmp_dir))
        return path

    return build


# --- torch files, zips and gzips around chosen bytes --------------------------------------


def pickle_ends(data: bytes) -> list[int]:
    """The offset just after each pickle of a file made of consecutive pickles."""
    stream, ends = io.BytesIO(data), []
    while stream.tell() < len(data):
        try:
            for _ in pickletools.genops(stream):
                pass
        except ValueError:
            break
        ends.append(stream.tell())
    return ends


def torch_zip(data_pkl: bytes, template: Path = ZIP_DIR / "counter" / "state.pt") -> bytes:
    """A zip-format torch file: `template` with its `data.pkl` record replaced."""
    out = io.BytesIO()
    with zipfile.ZipFile(template) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            data = data_pkl if info.filename.endswith("/data.pkl") else source.read(info)
            target.writestr(info.filename, data)
    return out.getvalue()


def torch_legacy(main_pickle: bytes, template: Path = LEGACY_DIR / "counter" / "state.pt") -> bytes:
    """A legacy-format torch file: the header pickles of `template`, then `main_pickle`."""
    data = template.read_bytes()
    header = data[: pickle_ends(data)[2]]  # magic number, protocol version, system info
    return header + main_pickle + pickle.dumps([], protocol=2)


def torch_value(value: object, legacy: bool = False) -> bytes:
    out = io.BytesIO()
    torch.save(value, out, _use_new_zipfile_serialization=not legacy)
    return out.getvalue()


def state_with(metadata: object, keys: dict[object, object] | None = None) -> bytes:
    """A zip torch file of an OrderedDict of `keys` whose `_metadata` is `metadata`."""
    state = collections.OrderedDict(keys or {"count": 5})
    state._metadata = metadata  # type: ignore[attr-defined]
    return torch_value(state)


def deflated_zeros(head: bytes, zeros: int, tail: bytes = b"") -> Iterator[bytes]:
    """A raw deflate stream of `head`, `zeros` zero bytes and `tail`, built cheaply.

    One MiB of zeros is compressed once after a full flush (which resets the compressor,
    so every MiB compresses to the same bytes) and repeated: a GiB costs a kilobyte.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    yield compressor.compress(head) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(bytes(MiB)) + compressor.flush(zlib.Z_FULL_FLUSH)
    for _ in range(zeros // MiB):
        yield block
    yield compressor.compress(bytes(zeros % MiB) + tail) + compressor.flush()


def zero_bomb(path: Path, head: bytes, zeros: int, tail: bytes = b"") -> Path:
    """A gzip file inflating to `head`, `zeros` zero bytes and `tail` (`deflated_zeros`).

    The trailer's CRC is left zero: a reader that gets that far has inflated the bomb.
    """
    with path.open("wb") as out:
        out.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff")
        out.writelines(deflated_zeros(head, zeros, tail))
        out.write(struct.pack("<II", 0, (len(head) + zeros + len(tail)) & 0xFFFFFFFF))
    return path


def zip_file(records: Iterable[tuple[str, bytes, int, int]]) -> bytes:
    """A zip of `(name, data, method, uncompressed size)` records, written by hand so that
    a record may claim any size (CRCs of deflated records are left zero)."""
    out, central = io.BytesIO(), []
    for name, data, method, size in records:
        crc = zlib.crc32(data) if method == zipfile.ZIP_STORED else 0
        fields = struct.pack(
            "<HHHHHIIIHH", 20, 0, method, 0, 0x21, crc, len(data), size, len(name), 0
        )
        offset = out.tell()
        out.write(b"PK\x03\x04" + fields + name.encode() + data)
        extra = struct.pack("<HHHII", 0, 0, 0, 0, offset)
        central.append(b"PK\x01\x02" + struct.pack("<H", 20) + fields + extra + name.encode())
    start = out.tell()
    out.write(b"".join(central))
    end = struct.pack("<HHHHIIH", 0, 0, len(central), len(central), out.tell() - start, start, 0)
    return out.getvalue() + b"PK\x05\x06" + end


def zip_record_bomb(record: str, size: int) -> bytes:
    """The zip torch file of the `model` node with its `record` deflated, inflating to
    `size` bytes (zeros after the real content): torch inflates a record whole."""
    with zipfile.ZipFile(ZIP_DIR / "model" / "state.pt") as source:
        records = [(info.filename, source.read(info)) for info in source.infolist()]
    return zip_file(
        (name, b"".join(deflated_zeros(data, size - len(data))), zipfile.ZIP_DEFLATED, size)
        if name.endswith(record)
        else (name, data, zipfile.ZIP_STORED, len(data))
        for name, data in records
    )


def zip_record_offset(record: str, skip: int) -> Callable[[Path], int]:
    """The offset of byte `skip` of a zip record's data."""

    def offset(path: Path) -> int:
        with zipfile.ZipFile(path) as archive:
            info = next(i for i in archive.infolist() if i.filename.endswith(record))
        with path.open("rb") as stream:
            stream.seek(info.header_offset + 26)
            name_length, extra_length = struct.unpack("<HH", stream.read(4))
        return info.header_offset + 30 + name_length + extra_length + skip

    return offset


# --- pickles, opcode by opcode -------------------------------------------------------------


def op_global(module: str, name: str) -> bytes:
    return f"c{module}\n{name}\n".encode()


def op_text(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def op_short(text: str) -> bytes:
    data = text.encode()
    return b"\x8c" + bytes([len(data)]) + data


def op_bytes(data: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(data)) + data


def op_int(value: int) -> bytes:
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data


def op_call(function: bytes, *arguments: bytes) -> bytes:
    return function + b"(" + b"".join(arguments) + b"tR"


def a_pickle(body: bytes, protocol: int = 2) -> bytes:
    return bytes([0x80, protocol]) + body + b"."


def _touch(marker: Path) -> str:
    return f"touch {shlex.quote(str(marker))}"


def _open_for_writing(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').close()"


def os_system(marker: Path) -> bytes:
    return a_pickle(op_call(op_global("os", "system"), op_text(_touch(marker))))


@dataclass(frozen=True)
class Malicious:
    """A pickle that, unpickled by `pickle.loads`, creates `marker`; `names` a refused global."""

    build: Payload
    names: str


MALICIOUS: dict[str, Malicious] = {
    "os_system": Malicious(os_system, "os.system"),
    "posix_system": Malicious(
        lambda m: a_pickle(op_call(op_global("posix", "system"), op_text(_touch(m)))),
        "posix.system",
    ),
    "builtins_eval": Malicious(
        lambda m: a_pickle(op_call(op_global("builtins", "eval"), op_text(_open_for_writing(m)))),
        "builtins.eval",
    ),
    "builtins_exec": Malicious(
        lambda m: a_pickle(op_call(op_global("builtins", "exec"), op_text(_open_for_writing(m)))),
        "builtins.exec",
    ),
    "builtins_getattr": Malicious(
        lambda m: a_pickle(
            op_call(
                op_call(
                    op_global("builtins", "getattr"),
                    op_call(op_global("builtins", "__import__"), op_text("os")),
                    op_text("system"),
                ),
                op_text(_touch(m)),
            )
        ),
        "builtins.getattr",
    ),
    "importlib_import_module": Malicious(
        lambda m: a_pickle(
            op_call(
                op_call(
                    op_call(op_global("operator", "attrgetter"), op_text("system")),
                    op_call(op_global("importlib", "import_module"), op_text("os")),
                ),
                op_text(_touch(m)),
            )
        ),
        "importlib.import_module",
    ),
    "marshal_loads": Malicious(
        lambda m: a_pickle(
            op_call(
                op_call(
                    op_global("types", "FunctionType"),
                    op_call(
                        op_global("marshal", "loads"),
                        op_bytes(marshal.dumps(compile(_open_for_writing(m), "<evil>", "exec"))),
                    ),
                    b"}",
                )
            )
        ),
        "marshal.loads",
    ),
    "nested_pickle_loads": Malicious(
        lambda m: a_pickle(op_call(op_global("pickle", "loads"), op_bytes(os_system(m)))),
        "pickle.loads",
    ),
    "nested_torch_load": Malicious(
        lambda m: a_pickle(
            op_call(
                op_global("torch", "load"),
                op_call(op_global("io", "BytesIO"), op_bytes(torch_zip(os_system(m)))),
                b"N",
                op_call(op_global("importlib", "import_module"), op_text("pickle")),
            )
        ),
        "torch.load",
    ),
    "nested_load_from_bytes": Malicious(
        # an allowed global whose nested torch file is evil: read by the same rules
        lambda m: a_pickle(
            op_call(
                op_global("torch.storage", "_load_from_bytes"), op_bytes(torch_zip(os_system(m)))
            )
        ),
        "os.system",
    ),
    "subprocess_call": Malicious(
        lambda m: a_pickle(
            op_call(
                op_global("subprocess", "call"), b"(" + op_text("touch") + op_text(str(m)) + b"t"
            )
        ),
        "subprocess.call",
    ),
    "stack_global_memo": Malicious(
        # 'os' and 'system' hide in a harmless list, then come back from the memo
        lambda m: a_pickle(
            b"]\x94("
            + op_short("os")
            + b"\x94"
            + op_short("system")
            + b"\x94e0h\x01h\x02\x93"
            + op_text(_touch(m))
            + b"\x85R",
            protocol=4,
        ),
        "os.system",
    ),
    "stack_global_dotted": Malicious(
        # a dotted name walks from an allowed module to os.system
        lambda m: a_pickle(
            op_short("torch")
            + op_short("serialization.os.system")
            + b"\x93"
            + op_text(_touch(m))
            + b"\x85R",
            protocol=4,
        ),
        "torch.serialization.os.system",
    ),
    "inst_opcode": Malicious(
        lambda m: a_pickle(b"(" + op_text(_touch(m)) + b"ios\nsystem\n"), "os.system"
    ),
    "obj_opcode": Malicious(
        lambda m: a_pickle(b"(" + op_global("os", "system") + op_text(_touch(m)) + b"o"),
        "os.system",
    ),
    "protocol_5": Malicious(
        lambda m: a_pickle(
            op_short("os") + op_short("system") + b"\x93" + op_text(_touch(m)) + b"\x85R",
            protocol=5,
        ),
        "os.system",
    ),
}


def poison_pickle(good: bytes) -> bytes:
    """`good` (a protocol 2 pickle) preceded by BUILDs that modify allowed globals."""
    assert good[:2] == b"\x80\x02"
    flag = b"}" + op_text(POISON) + b"\x88s"
    body = (
        op_global("flambe.compile.serialization", "State")
        + b"N"
        + flag
        + b"\x86b0"  # BUILD (None, {POISON: True}): setattr on the class
        + op_global("torch.storage", "UntypedStorage")
        + b"N"
        + flag
        + b"\x86b0"  # the same on a torch class
        + op_global("torch._utils", "_rebuild_tensor_v2")
        + flag
        + b"b0"  # BUILD {POISON: True}: the function's __dict__
        + op_global("torch.serialization", "_get_layout")
        + b"}"
        + op_text("cache")
        + b"}"
        + op_text("torch.strided")
        + op_global("torch", "sparse_coo")
        + b"ssb0"  # BUILD {'cache': {...}}: torch's layout cache, for every later torch.load
    )
    return good[:2] + body + good[2:]


def colliding_keys(count: int) -> bytes:
    """A dict of `count` int keys with one hash: building it takes `count`**2 steps."""
    modulus = (1 << 61) - 1
    keys = b"".join(op_int(i * modulus) + b"N" for i in range(1, count + 1))
    return a_pickle(b"}(" + keys + b"u")


def set_of_stride_0_tensor() -> bytes:
    """`set()` over a tensor of 2**40 elements that all alias one (stride 0)."""
    storage = op_call(
        op_global("torch.storage", "_load_from_bytes"),
        op_bytes(torch_value(torch.zeros(1).untyped_storage())),
    )
    tensor = op_call(
        op_global("torch._utils", "_rebuild_tensor_v2"),
        storage,
        b"K\x00",
        b"(" + op_int(1 << 40) + b"t",
        b"(K\x00t",
        b"\x89",
        op_call(op_global("collections", "OrderedDict")),
    )
    return a_pickle(b"}" + op_text("a") + op_call(op_global("builtins", "set"), tensor) + b"s")


STRUCTURAL: dict[str, Callable[[], bytes]] = {
    "binunicode_2gib": lambda: b"\x80\x02X" + struct.pack("<I", 1 << 31) + b"abc",
    "binbytes_4gib": lambda: b"\x80\x03B" + struct.pack("<I", (1 << 32) - 1) + b"abc",
    "binbytes8_huge": lambda: b"\x80\x04\x8e" + struct.pack("<Q", 1 << 62) + b"abc",
    "bytearray8_huge": lambda: b"\x80\x05\x96" + struct.pack("<Q", 1 << 62) + b"abc",
    "long4_2gib": lambda: b"\x80\x02\x8b" + struct.pack("<i", (1 << 31) - 1) + b"abc",
    "deep_lists": lambda: a_pickle(b"}" + op_text("a") + b"]" * 100_000 + b"a" * 99_999 + b"s"),
    "deep_marks": lambda: a_pickle(b"}" + op_text("a") + b"(" * 100_000 + b"l" * 100_000 + b"s"),
    "deep_tuples": lambda: a_pickle(b"}" + op_text("a") + b")" + b"\x85" * 100_000 + b"s"),
    "deep_tuple_key": lambda: a_pickle(b"})" + b"\x85" * 3_000_000 + b"Ns"),  # hashed: C stack
    "protocol_5_out_of_band": lambda: a_pickle(b"}" + op_text("a") + b"\x97s", protocol=5),
    "persistent_id": lambda: a_pickle(b"}" + op_text("a") + op_text("0") + b"Qs"),
    "unknown_opcode": lambda: a_pickle(b"}\xff"),
    "no_stop": lambda: b"\x80\x02}",
}

ALLOW_LIST_BOMBS: dict[str, tuple[Callable[[], bytes], str | None]] = {
    "bytearray_16gib": (
        lambda: a_pickle(op_call(op_global("builtins", "bytearray"), op_int(1 << 34))),
        None,
    ),
    "load_type_bytes_16gib": (
        lambda: a_pickle(
            op_call(
                op_call(op_global("dill._dill", "_load_type"), op_text("bytes")), op_int(1 << 34)
            )
        ),
        None,
    ),
    "set_of_range_2e40": (
        lambda: a_pickle(
            op_call(
                op_global("builtins", "set"),
                op_call(op_global("builtins", "range"), op_int(1 << 40)),
            )
        ),
        None,
    ),
    "set_of_stride_0_tensor": (set_of_stride_0_tensor, None),
    "colliding_dict_keys": (lambda: colliding_keys(40_000), HASH_COLLISIONS),
}


# --- where a pickle goes -------------------------------------------------------------------


def in_pkl(payload: Payload) -> Builder:
    """A pickle-only archive holding the pickle."""
    return file("evil.pkl", lambda tmp_dir: payload(tmp_dir / MARKER))


def in_pkl_tgz(payload: Payload) -> Builder:
    """A compressed pickle-only archive holding the pickle."""

    def build(tmp_dir: Path) -> Path:
        path = tmp_dir / "evil.pkl.tar.gz"
        data = payload(tmp_dir / MARKER)
        with tarfile.open(path, "w:gz") as tar:
            info = tarfile.TarInfo("evil.pkl")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        return path

    return build


def in_tgz(payload: Payload) -> Builder:
    """A compressed folder archive whose `model/inner/state.pt` holds the pickle."""

    def build(tmp_dir: Path) -> Path:
        folder = copy_good(ZIP_DIR, tmp_dir, "evil-tgz")
        (folder / CHILD / "state.pt").write_bytes(torch_zip(payload(tmp_dir / MARKER)))
        return tar_folder(folder)

    return build


def in_folder(
    source: Path, member: str, wrap: Callable[[bytes], bytes]
) -> Callable[[Payload], Builder]:
    """Containers: the folder `source` with its `member` made of the pickle (`wrap`ped)."""

    def container(payload: Payload) -> Builder:
        def build(tmp_dir: Path) -> Path:
            root = copy_good(source, tmp_dir)
            (root / member).write_bytes(wrap(payload(tmp_dir / MARKER)))
            return root

        return build

    return container


CONTAINERS: dict[str, tuple[Callable[[Payload], Builder], str]] = {
    "pkl": (in_pkl, "evil.pkl"),
    "pkl.tar.gz": (in_pkl_tgz, "evil.pkl"),
    "raw-stash": (in_folder(RAW_STASH_DIR, "counter/stash.pkl", bytes), "counter/stash.pkl"),
    "legacy-state": (in_folder(LEGACY_DIR, "model/state.pt", torch_legacy), "model/state.pt"),
    "zip-state": (in_folder(ZIP_DIR, f"{CHILD}/state.pt", torch_zip), f"{CHILD}/state.pt"),
    "zip-stash": (in_folder(ZIP_DIR, "stash.pkl", torch_zip), "stash.pkl"),
    "tgz-state": (in_tgz, f"{CHILD}/state.pt"),
}


# --- tarballs --------------------------------------------------------------------------------


def tar_folder(folder: Path, extra: Iterable[tuple[tarfile.TarInfo, bytes]] = ()) -> Path:
    """`folder` as `FOLDER.tar.gz` beside it, then the `extra` members; the folder goes."""
    path = folder.with_name(folder.name + ".tar.gz")
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, folder.name)
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data))
    shutil.rmtree(folder)
    return path


def member(
    name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", linkname: str = ""
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    info.size = len(data)
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 5
    return info, data


def tgz_with(*extra: Callable[[Path], tuple[tarfile.TarInfo, bytes]]) -> Builder:
    """The good folder as `evil-tgz.tar.gz`, then the members `extra` make (from tmp_dir)."""

    def build(tmp_dir: Path) -> Path:
        folder = copy_good(ZIP_DIR, tmp_dir, "evil-tgz")
        return tar_folder(folder, [make(tmp_dir) for make in extra])

    return build


def header(
    name: str, length: int, kind: bytes = tarfile.REGTYPE, pax: dict[str, str] | None = None
) -> bytes:
    """One tar header block (preceded by its pax header when `pax` is given)."""
    info = tarfile.TarInfo(name)
    info.type, info.size, info.pax_headers = kind, length, pax or {}
    return info.tobuf(tarfile.PAX_FORMAT if pax else tarfile.GNU_FORMAT)


def padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % tarfile.BLOCKSIZE)


ROOT_HEADER = header("evil-tgz/", 0, tarfile.DIRTYPE)


def raw_tgz(blocks: bytes) -> Builder:
    """`evil-tgz.tar.gz` made of hand-written tar blocks (end-of-archive blocks appended)."""
    return file("evil-tgz.tar.gz", lambda _: gzip.compress(blocks + bytes(2 * tarfile.BLOCKSIZE)))


def header_bomb(kind: bytes, size: int) -> Builder:
    """`bomb.tar.gz`: a header of `kind` announcing `size` bytes, and that many zeros."""

    def build(tmp_dir: Path) -> Path:
        name = "././@PaxHeader" if kind == tarfile.XHDTYPE else "evil-tgz/zeros"
        head = ROOT_HEADER + header(name, size, kind)
        tail = bytes(-size % tarfile.BLOCKSIZE + 2 * tarfile.BLOCKSIZE)
        return zero_bomb(tmp_dir / "bomb.tar.gz", head, size, tail)

    return build


def many_members(count: int) -> Builder:
    """`many.tar.gz`: a root folder and `count - 1` empty folders in it."""

    def build(tmp_dir: Path) -> Path:
        path = tmp_dir / "many.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            for i in range(count):
                tar.addfile(member("many" + f"/{i}" * bool(i), tarfile.DIRTYPE)[0])
        return path

    return build


def deep_folders(depth: int) -> Builder:
    """`deep.pkl.tar.gz`: its member is not a pickle but a folder nested `depth` deep."""

    def build(tmp_dir: Path) -> Path:
        path = tmp_dir / "deep.pkl.tar.gz"
        with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
            for level in range(depth):
                tar.addfile(member("deep.pkl" + "/d" * level, tarfile.DIRTYPE)[0])
        return path

    return build


# --- other payloads and folders --------------------------------------------------------------


def tar_format_polyglot(tmp_dir: Path) -> bytes:
    """torch's pre-1.0 tar format, starting like a legacy torch file: torch would extract it
    and read its `storages` member through a symbolic link to a file outside."""
    secret = tmp_dir / "secret"
    secret.write_bytes(b"a secret outside the archive")
    out = io.BytesIO()
    with tarfile.open(
        fileobj=out, mode="w", format=tarfile.USTAR_FORMAT, encoding="latin-1"
    ) as tar:
        tar.addfile(tarfile.TarInfo(pickle.dumps(0x1950A86A20F9469CFC6C, 2).decode("latin-1")))
        tar.addfile(member("storages", tarfile.SYMTYPE, linkname=str(secret))[0])
    return out.getvalue()


def torchscript(marker: Path) -> bytes:
    """A TorchScript archive whose `__setstate__` creates `marker` when it is loaded."""
    source = (
        "import torch\n"
        "class Evil(torch.nn.Module):\n"
        "    @torch.jit.export\n"
        "    def __getstate__(self) -> int:\n"
        "        return 1\n"
        "    @torch.jit.export\n"
        "    def __setstate__(self, state: int) -> None:\n"
        f"        self.training = torch.from_file({str(marker)!r}, True, 1).numel() > 0\n"
    )
    module = marker.with_name("evil_module.py")  # torch.jit.script reads the source file
    module.write_text(source)
    namespace: dict[str, object] = {}
    exec(compile(source, str(module), "exec"), namespace)
    out = io.BytesIO()
    torch.jit.save(torch.jit.script(namespace["Evil"]()), out)  # type: ignore[operator]
    module.unlink()
    return out.getvalue()


def special_file(place: str, make: Callable[[Path, Path], object]) -> Builder:
    """The zip folder with `place` replaced by what `make(path, tmp_dir)` creates there
    (a FIFO, a device, a symbolic link)."""

    def build(tmp_dir: Path) -> Path:
        root = copy_good(ZIP_DIR, tmp_dir)
        path = root / place
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
        make(path, tmp_dir)
        return root

    return build


def deep_node_folders(depth: int) -> Builder:
    """A folder archive whose Components nest `depth` folders deep, each a good node."""

    def build(tmp_dir: Path) -> Path:
        root = copy_good(ZIP_DIR / "counter", tmp_dir, "deep")
        folder = root
        for _ in range(depth):
            folder = folder / "c"
            folder.mkdir()
            for name in NODE_FILES:
                shutil.copyfile(root / name, folder / name)
        return root

    return build


def linked_out(source: Path) -> Callable[[Path, Path], object]:
    """A link to a good copy of `source` made beside the archive, outside it."""
    return lambda path, tmp_dir: path.symlink_to(copy_good(source, tmp_dir, "outside"))


def random_bytes(count: int) -> bytes:
    return random.Random(count).randbytes(count)


# --- the cases -------------------------------------------------------------------------------


def bad_inputs() -> list[BadInput]:
    """Every bad input; ids are unique."""
    cases = [
        *_node_file_cases(),
        *_payload_file_cases(),
        *_pickle_cases(),
        *_tar_cases(),
        *_indexed_gzip_cases(),
        *_path_and_folder_cases(),
    ]
    assert len({case.id for case in cases}) == len(cases)
    return cases


def _node_file_cases() -> Iterator[BadInput]:
    """Missing, empty and malformed node files, in the root and in a child node."""
    for node, prefix in (("root", ""), ("child", f"{CHILD}/")):
        for name in NODE_FILES:
            yield BadInput(
                f"missing-{node}-{name}",
                edited(ZIP_DIR, prefix + name, removed()),
                (prefix + name,),
            )
        # an empty source.py or config.yaml is legitimate: flambe reads both as text
        for name in ("state.pt", "version.txt", "protocol_version.txt", "stash.pkl"):
            yield BadInput(
                f"empty-{node}-{name}",
                edited(ZIP_DIR, prefix + name, written(b"")),
                (prefix + name,),
            )
        for text in ("abc", "0", "99"):
            yield BadInput(
                f"protocol-{text}-{node}",
                edited(ZIP_DIR, prefix + "protocol_version.txt", written(text)),
                (prefix + "protocol_version.txt", repr(text)),
            )
        for case, text in (
            ("no-colon", "Wrapper0.0.0"),
            ("not-semver", "Wrapper:abc"),
            ("two-colons", "Wrapper:1:2"),
        ):
            yield BadInput(
                f"version-{case}-{node}",
                edited(ZIP_DIR, prefix + "version.txt", written(text)),
                (prefix + "version.txt",),
            )
        for case, data in (
            ("not-utf8", b"\xff\xfe!Wrapper\n\x80\x81"),
            ("not-yaml", b"model: [1, 2\n  - {\n"),
            ("three-documents", b"a: 1\n---\nb: 2\n---\nc: 3\n"),
        ):
            yield BadInput(
                f"config-{case}-{node}",
                edited(ZIP_DIR, prefix + "config.yaml", written(data)),
                (prefix + "config.yaml",),
            )
        yield BadInput(
            f"state-holds-list-{node}",
            edited(ZIP_DIR, prefix + "state.pt", written(torch_value([1, 2]))),
            (prefix + "state.pt",),
        )
        yield BadInput(
            f"state-holds-tensor-{node}",
            edited(ZIP_DIR, prefix + "state.pt", written(torch_value(torch.zeros(2)))),
            (prefix + "state.pt",),
        )
    yield BadInput(
        "child-missing-several-files",
        edited(ZIP_DIR, CHILD, removed("source.py", "config.yaml", "stash.pkl")),
        (f"{CHILD}/source.py", f"{CHILD}/config.yaml", f"{CHILD}/stash.pkl"),
    )
    yield BadInput(
        "stash-holds-list", edited(ZIP_DIR, "stash.pkl", written(torch_value([1]))), ("stash.pkl",)
    )
    yield BadInput(
        "state-metadata-is-a-list",
        edited(ZIP_DIR, "state.pt", written(state_with([1, 2]))),
        ("state.pt",),
    )
    yield BadInput(
        "state-metadata-directories-not-strings",
        edited(ZIP_DIR, "state.pt", written(state_with({"_flambe_directories": {1, 2}, "": {}}))),
        ("state.pt",),
    )
    yield BadInput(
        "state-int-keys",
        edited(ZIP_DIR, f"{CHILD}/state.pt", written(state_with({}, {1: 2}))),
        (f"{CHILD}/state.pt",),
    )
    big_config = "".join(f"k{i}: [1, 2, {{a: b}}]\n" for i in range(100_000))
    yield BadInput(
        "config-yaml-2mb",
        edited(ZIP_DIR, "config.yaml", written(big_config)),
        ("config.yaml",),
        isolated=True,
        timeout=8,
    )


def _payload_file_cases() -> Iterator[BadInput]:
    """`state.pt` files truncated, bit-flipped or of the wrong kind, in both torch formats."""
    state = "model/state.pt"
    for case, keep in (
        ("header", lambda size: 20),
        ("half", lambda size: size // 2),
        ("last-byte", lambda size: size - 1),
    ):
        yield BadInput(
            f"truncated-zip-state-{case}", edited(ZIP_DIR, state, truncated(keep)), (state,)
        )
        yield BadInput(
            f"truncated-legacy-state-{case}",
            edited(LEGACY_DIR, state, truncated(keep)),
            (state,),
            xfail=LEGACY_TAIL_VALID if case == "last-byte" else None,
        )
    # flips that must break the file; a flip in tensor bytes may decode (see test_fuzz)
    flips: dict[str, tuple[Path, Callable[[Path], int]]] = {
        "zip-magic": (ZIP_DIR, lambda path: 0),
        "zip-data.pkl-first-opcode": (ZIP_DIR, zip_record_offset("data.pkl", 0)),
        "zip-data.pkl-middle": (ZIP_DIR, zip_record_offset("data.pkl", 40)),
        "zip-end-of-central-directory": (ZIP_DIR, lambda path: path.stat().st_size - 22),
        "legacy-pickle-protocol": (LEGACY_DIR, lambda path: 0),
        "legacy-magic-number": (LEGACY_DIR, lambda path: 5),
        "legacy-main-pickle-stop": (LEGACY_DIR, lambda path: pickle_ends(path.read_bytes())[3] - 1),
        "legacy-storage-keys-stop": (
            LEGACY_DIR,
            lambda path: pickle_ends(path.read_bytes())[4] - 1,
        ),
    }
    for case, (source, offset) in flips.items():
        yield BadInput(
            f"bit-flip-{case}",
            edited(source, state, flipped(offset)),
            (state,),
            xfail=LEGACY_TAIL_VALID if case == "legacy-storage-keys-stop" else None,
        )
    yield BadInput(
        "state-legacy-tar-format-polyglot",
        lambda tmp_dir: edited(LEGACY_DIR, state, written(tar_format_polyglot(tmp_dir)))(tmp_dir),
        (state,),
    )
    yield BadInput(
        "state-torchscript",
        lambda tmp_dir: edited(ZIP_DIR, state, written(torchscript(tmp_dir / MARKER)))(tmp_dir),
        (state,),
    )
    yield BadInput(
        "state-zip-tensor-record-bomb-2gib",
        edited(ZIP_DIR, state, written(zip_record_bomb("data/0", 2 * GiB))),
        (state,),
        isolated=True,
        xfail=STORAGE_BOMB_VALID,
    )
    yield BadInput(
        "root-state-zip-data.pkl-record-bomb-1.25gib",
        edited(ZIP_DIR, "state.pt", written(zip_record_bomb("data.pkl", 5 * GiB // 4))),
        ("state.pt",),
        isolated=True,
    )


def _pickle_cases() -> Iterator[BadInput]:
    """Malicious and malformed pickles, in every place a pickle is read."""
    for payload, malicious in MALICIOUS.items():
        for container, (wrap, place) in CONTAINERS.items():
            yield BadInput(
                f"pickle-{payload}-in-{container}",
                wrap(malicious.build),
                (place, malicious.names, "allow_globals"),
            )
    for payload, structural in STRUCTURAL.items():
        for container in ("pkl", "raw-stash", "legacy-state", "zip-state"):
            wrap, place = CONTAINERS[container]
            yield BadInput(
                f"pickle-{payload}-in-{container}",
                wrap(lambda _, build=structural: build()),
                (place,),
                isolated=payload == "deep_tuple_key",  # a crash, if it comes back
            )
    yield BadInput(
        "pickle-poison-allowed-globals-in-pkl",
        file("evil.pkl", lambda _: poison_pickle(ZIP_PKL.read_bytes())),
        ("evil.pkl",),
    )
    for case, (build, xfail) in ALLOW_LIST_BOMBS.items():
        yield BadInput(
            f"pickle-{case}-in-pkl",
            in_pkl(lambda _, build=build: build()),
            ("evil.pkl",),
            isolated=True,
            timeout=8,
            xfail=xfail,
        )


def _tar_cases() -> Iterator[BadInput]:
    """Unsafe members, broken tarballs and gzip bombs."""
    archive = "evil-tgz.tar.gz"
    yield from _tar_content_cases()
    good = ZIP_TGZ.read_bytes
    yield BadInput("tar-not-gzip", file(archive, lambda _: gzip.decompress(good())), (archive,))
    yield BadInput(
        "tar-truncated-half", file(archive, lambda _: good()[: len(good()) // 2]), (archive,)
    )
    yield BadInput("tar-truncated-gzip-header", file(archive, lambda _: good()[:10]), (archive,))
    yield BadInput(
        "tar-gzip-of-garbage",
        file(archive, lambda _: gzip.compress(random_bytes(4096))),
        (archive,),
    )
    yield BadInput(
        "gzip-bomb-20gib-member-default-cap",
        header_bomb(tarfile.REGTYPE, 20 * GiB),
        ("bomb.tar.gz", "FLAMBE_COMPAT_MAX_UNPACKED_BYTES"),
        timeout=10,
    )
    for case, kind in (
        ("pax-header", tarfile.XHDTYPE),
        ("gnu-long-name", tarfile.GNUTYPE_LONGNAME),
    ):
        yield BadInput(
            f"gzip-bomb-{case}-4gib", header_bomb(kind, 4 * GiB), ("bomb.tar.gz",), isolated=True
        )
    yield BadInput(
        "tar-too-many-members",
        many_members(MAX_MEMBERS + 1),
        ("many.tar.gz", str(MAX_MEMBERS)),
        isolated=True,
        timeout=60,
    )
    yield BadInput("tar-pkl-member-is-deep-folder", deep_folders(1500), ("deep.pkl.tar.gz", "deep"))


def _tar_content_cases() -> Iterator[BadInput]:
    """Bad tar members and headers, whatever their gzip framing (see `_indexed_gzip_cases`)."""
    archive = "evil-tgz.tar.gz"
    unsafe: dict[str, Callable[[Path], tuple[tarfile.TarInfo, bytes]]] = {
        "dotdot": lambda t: member("evil-tgz/../../escaped-dotdot", data=b"x"),
        "dotdot-first": lambda t: member("../escaped-dotdot", data=b"x"),
        "absolute": lambda t: member(str(t / "escaped-absolute"), data=b"x"),
        "dot-segment": lambda t: member("evil-tgz/./state.pt", data=b"x"),
        "symlink-out": lambda t: member("evil-tgz/link", tarfile.SYMTYPE, linkname=str(t)),
        "symlink-up": lambda t: member("evil-tgz/link", tarfile.SYMTYPE, linkname="../.."),
        "hardlink-out": lambda t: member("evil-tgz/hard", tarfile.LNKTYPE, linkname=str(t / "v")),
        "fifo": lambda t: member("evil-tgz/fifo", tarfile.FIFOTYPE),
        "char-device": lambda t: member("evil-tgz/zero", tarfile.CHRTYPE),
        "block-device": lambda t: member("evil-tgz/disk", tarfile.BLKTYPE),
        "duplicate": lambda t: member("evil-tgz/state.pt", data=b"\x80\x02}."),
        "outside-root": lambda t: member("other/escaped-outside", data=b"x"),
    }
    for case, make in unsafe.items():
        yield BadInput(f"tar-member-{case}", tgz_with(make), (archive,))
    yield BadInput(
        "tar-member-symlink-then-write-through-it",
        tgz_with(
            lambda t: member("evil-tgz/link", tarfile.SYMTYPE, linkname=str(t)),
            lambda t: member("evil-tgz/link/escaped-through-link", data=b"x"),
        ),
        (archive,),
    )
    yield BadInput("tar-empty", file(archive, lambda _: gzip.compress(bytes(10240))), (archive,))
    low_cap = (("FLAMBE_COMPAT_MAX_UNPACKED_BYTES", str(4 * MiB)),)
    yield BadInput(
        "gzip-bomb-one-member-low-cap",
        tgz_with(lambda t: member("evil-tgz/padding", data=bytes(64 * MiB))),
        (archive, "FLAMBE_COMPAT_MAX_UNPACKED_BYTES"),
        env=low_cap,
    )
    yield BadInput(
        "gzip-bomb-many-members-low-cap",
        tgz_with(*[lambda t, i=i: member(f"evil-tgz/pad{i}", data=bytes(MiB)) for i in range(16)]),
        (archive, "FLAMBE_COMPAT_MAX_UNPACKED_BYTES"),
        env=low_cap,
    )
    chains = {
        "pax": header("././@PaxHeader", 11, tarfile.XHDTYPE) + padded(b"11 a=bcdef\n"),
        "gnu-long-name": header("././@LongLink", 5, tarfile.GNUTYPE_LONGNAME) + padded(b"abcd\0"),
    }
    for case, link in chains.items():
        yield BadInput(
            f"tar-chained-{case}-headers", raw_tgz(link * 2000 + ROOT_HEADER), (archive,)
        )
    fields = {
        "pax-sparse-map": {"GNU.sparse.map": "a,b", "GNU.sparse.offset": "0"},
        "pax-sparse-1.0": {"GNU.sparse.major": "1", "GNU.sparse.minor": "0"},
        "pax-negative-size": {"size": "-1000000000000"},
        "pax-huge-size": {"size": str(10**30)},
    }
    for case, pax in fields.items():
        blocks = ROOT_HEADER + header("evil-tgz/state.pt", 3, pax=pax) + padded(b"abc")
        yield BadInput(f"tar-{case}", raw_tgz(blocks), (archive,))
    sparse = ROOT_HEADER + header("evil-tgz/state.pt", 0, tarfile.GNUTYPE_SPARSE)
    yield BadInput("tar-gnu-sparse-member", raw_tgz(sparse), (archive,))
    truncated_member = ROOT_HEADER + header("evil-tgz/state.pt", 4096) + bytes(1000)
    yield BadInput(
        "tar-member-data-cut-short",
        file(archive, lambda _: gzip.compress(truncated_member)),
        (archive,),
    )


def _indexed_gzip_cases() -> Iterator[BadInput]:
    """What we write: gzip members carrying their sizes, inflated in parallel (`compress`).

    Every bad tar of `_tar_content_cases` again in that framing, then broken framings."""
    for case in _tar_content_cases():
        yield dataclasses.replace(case, id=f"{case.id}-indexed-gzip", build=indexed(case.build))
    archive = "evil-tgz.tar.gz"
    good = indexed(file(archive, lambda _: ZIP_TGZ.read_bytes()))
    first_member_end = lambda path: int.from_bytes(path.read_bytes()[16:20], "little")  # noqa: E731
    broken: dict[str, Callable[[Path], object]] = {
        "crc-flipped": flipped(lambda path: first_member_end(path) - 8),
        "size-in-trailer-flipped": flipped(lambda path: first_member_end(path) - 4),
        "deflate-body-flipped": flipped(lambda path: 30),
        "unpacked-size-in-index-flipped": flipped(lambda path: 20),
        "truncated-half": truncated(lambda size: size // 2),
    }
    for case, edit in broken.items():
        yield BadInput(f"indexed-gzip-{case}", edited_file(good, edit), (archive,))


def indexed(build: Builder) -> Builder:
    """The tarball `build` makes, its gzip framing rewritten the way we write it."""

    def rebuild(tmp_dir: Path) -> Path:
        path = build(tmp_dir)
        tar = gzip.decompress(path.read_bytes())
        path.unlink()
        with gzip_writer(path) as stream:
            stream.write(tar)
        return path

    return rebuild


def edited_file(build: Builder, edit: Callable[[Path], object]) -> Builder:
    """What `build` makes, then changed in place by `edit`."""

    def rebuild(tmp_dir: Path) -> Path:
        path = build(tmp_dir)
        edit(path)
        return path

    return rebuild


def _path_and_folder_cases() -> Iterator[BadInput]:
    """Paths that are no archive, and folders with links, special files or deep nesting."""
    yield BadInput("path-does-not-exist", lambda t: t / "missing.flambe", ("missing.flambe",))
    yield BadInput("path-empty-file", file("empty.pkl", lambda _: b""), ("empty.pkl",))
    yield BadInput(
        "path-random-bytes", file("random.bin", lambda _: random_bytes(1 << 16)), ("random.bin",)
    )
    yield BadInput(
        "path-random-bytes-after-gzip-magic",
        file("random.tar.gz", lambda _: b"\x1f\x8b" + random_bytes(1 << 16)),
        ("random.tar.gz",),
    )
    yield BadInput("path-empty-folder", lambda t: _made(t / "empty.flambe"), ("empty.flambe",))
    yield BadInput(
        "path-folder-holding-an-empty-folder",
        lambda t: _made(t / "nested.flambe" / "inner").parent,
        ("nested.flambe",),
    )
    yield BadInput(
        "path-fifo", lambda t: _fifo(t / "fifo.pkl"), ("fifo.pkl",), isolated=True, timeout=8
    )
    yield BadInput(
        "path-broken-symlink",
        lambda t: _link(t / "broken.flambe", t / "nowhere"),
        ("broken.flambe",),
    )
    for case, place, make in (
        ("state", "state.pt", linked_out(ZIP_DIR / "state.pt")),
        ("child-state", f"{CHILD}/state.pt", linked_out(ZIP_DIR / CHILD / "state.pt")),
        ("node", "counter", linked_out(ZIP_DIR / "counter")),
        ("dangling", "stash.pkl", lambda path, tmp_dir: path.symlink_to(tmp_dir / "nowhere")),
    ):
        yield BadInput(f"folder-symlink-{case}-out", special_file(place, make), (place,))
    for case, place, make in (
        ("fifo", "protocol_version.txt", _fifo),
        ("fifo", f"{CHILD}/state.pt", _fifo),
        ("fifo", f"{CHILD}/config.yaml", _fifo),
        ("char-device", "protocol_version.txt", _dev_zero),
        ("char-device", f"{CHILD}/source.py", _dev_zero),
    ):
        yield BadInput(
            f"folder-{case}-{place.replace('/', '-')}",
            special_file(place, make),
            (place,),
            isolated=True,  # a FIFO blocks whoever opens it; /dev/zero never ends
            timeout=8,
        )
    yield BadInput("folder-nested-1500-nodes", deep_node_folders(1500), ("deep",))


def _made(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def _fifo(path: Path, tmp_dir: Path | None = None) -> Path:
    os.mkfifo(path)
    return path


def _dev_zero(path: Path, tmp_dir: Path | None = None) -> None:
    """A character device like /dev/zero (needs privileges: the case is skipped without)."""
    os.mknod(path, stat.S_IFCHR | 0o644, os.makedev(1, 5))


def _link(path: Path, target: Path) -> Path:
    path.symlink_to(target)
    return path


# --- bad configs: the state loads, `flambe_compat.load()` must refuse the object -------------

CANARY = "flambe_compat_canary_ext"
"""An extension module a bad config names; the builder writes it, importing it makes MARKER."""


def with_config(text: str, pickle_only: bool = False) -> Builder:
    """A good archive whose root config is `text`: a folder, or a protocol 1 pickle."""

    def build(tmp_dir: Path) -> Path:
        (tmp_dir / f"{CANARY}.py").write_text(
            f"open({str(tmp_dir / MARKER)!r}, 'w').close()\n"
            "from flambe_compat import Component\n"
            "class Thing(Component):\n    pass\n"
        )
        if not pickle_only:
            root = copy_good(ZIP_DIR, tmp_dir)
            (root / "config.yaml").write_text(text)
            return root
        state = load_state_from_file(ZIP_PKL)
        state._metadata[""]["_flambe_config"] = text
        save_state_to_file(state, tmp_dir / "bad", pickle_only=True, protocol=1)
        return tmp_dir / "bad.pkl"

    return build


def _alias_bomb(levels: int = 9) -> str:
    lines = ["!torch.Linear", "in_features: 1", "out_features: 1", "a0: &a0 [x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 8)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def bad_configs() -> list[BadInput]:
    """Archives whose state is fine and whose root config `load()` must refuse."""
    cases = [
        ("unknown-tag", "!no_such_pkg.Thing {}\n", ("config node (root)", "unknown tag")),
        (
            "python-object-apply",
            f"!!python/object/apply:os.system ['touch {MARKER}']\n",
            ("tag !!python/object/apply:os.system",),
        ),
        (
            "python-name-nested",
            "!torch.Linear\nin_features: !!python/name:os.system ''\nout_features: 1\n",
            ("config node in_features", "!!python/name:os.system"),
        ),
        ("python-tuple", "a: !!python/tuple [1, 2]\n", ("config node a", "!!python/tuple")),
        ("alias-bomb", _alias_bomb(), ("alias bomb",)),
        ("deep-nesting", "a: " + "[" * 150 + "]" * 150 + "\n", ("deeper than 100 levels",)),
        (
            "private-link",
            "!torch.Linear\nin_features: 2\nout_features: 1\nbias: !@ in_features.__class__\n",
            ("config node bias", "'__class__' is private", "trusted=True"),
        ),
        (
            "call-link",
            "!torch.Linear\nin_features: 1\nout_features: 1\nbias: !call in_features.bit_length\n",
            ("config node bias", "!call runs a method", "trusted=True"),
        ),
        (
            "raising-constructor",
            "!torch.Linear\nin_features: -1\nout_features: 2\n",
            ("config node (root) (!torch.Linear, class Linear): building it raised",),
        ),
        (
            "missing-stash-entry",
            "!torch.Linear\nin_features: !$ '5'\nout_features: 1\n",
            ("config node in_features", "stash entry '5'"),
        ),
        (
            "extension-not-allowed",
            f"{CANARY}: canary==1\n---\n!{CANARY}.Thing {{}}\n",
            (f"unknown tag !{CANARY}.Thing", f"extensions name {CANARY}"),
        ),
        ("three-documents", "--- 1\n--- 2\n--- 3\n", ("config.yaml", "maximum of 2")),
        ("tag-on-a-sequence", "!torch.Linear [1, 2]\n", ("takes a mapping",)),
        ("link-to-itself", "!torch.Linear\nin_features: !@ in_features\n", ("back to itself",)),
        ("recursive-alias", "&a !torch.Sequential\nx: *a\n", ("contains itself",)),
    ]
    built = [
        BadInput(f"config-{name}", with_config(text), fragments) for name, text, fragments in cases
    ]
    built += [
        BadInput(f"config-pkl-{name}", with_config(text, pickle_only=True), fragments)
        for name, text, fragments in cases[:3]
    ]
    built.append(
        BadInput("config-oversize", with_config("a: '" + "x" * (1 << 20) + "'\n"), ("config.yaml",))
    )
    return built
