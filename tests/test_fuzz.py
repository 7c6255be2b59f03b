"""Fuzzing good archives: whatever the damage, loading succeeds or raises `LoadError`.

Byte flips at random offsets of random files, truncations, dropped files and files
duplicated into another node, on folder, tar.gz and pickle archives of the corpus. A
flip in a tensor's bytes may well decode: success is allowed, any exception other than
`LoadError` is not, nor a hang, nor a file left outside a temporary folder. `validate`
must not raise either. The hypothesis profile (tests/conftest.py) sets the examples.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

import flambe_compat
from flambe_compat import LoadError, State, load_state_from_file
from flambe_compat.objects import rebuild
from tests.badinputs import copy_good, deadline, tar_folder
from tests.corpus import CORPUS
from tests.sample_graphs import legacy_module

FOLDERS = [
    CORPUS / "0.4.18-zip" / "wrapper-dir",
    CORPUS / "0.4.18-legacy" / "wrapper-dir",
    CORPUS / "0.4.3-legacy" / "mlp-dir",
]
TARBALLS = [
    CORPUS / "0.4.18-zip" / "wrapper-tgz.tar.gz",
    CORPUS / "0.4.11-legacy" / "mlp-tgz.tar.gz",
    CORPUS / "0.4.13-legacy" / "counter-pkltgz.pkl.tar.gz",
]
PICKLES = [
    CORPUS / "0.4.18-legacy" / "wrapper-pkl.pkl",
    CORPUS / "0.4.6-legacy" / "mlp-pkl.pkl",
]
TIMEOUT = 30.0


def damage_file(path: Path, data: st.DataObject) -> None:
    """Flip one bit of `path`, or truncate it."""
    content = bytearray(path.read_bytes())
    if content and data.draw(st.booleans(), label="flip (else truncate)"):
        offset = data.draw(st.integers(0, len(content) - 1), label="offset")
        content[offset] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    else:
        content = content[: data.draw(st.integers(0, max(len(content) - 1, 0)), label="length")]
    path.write_bytes(bytes(content))


def damage_folder(root: Path, data: st.DataObject) -> None:
    """One to three damages: flips, truncations, dropped and duplicated files."""
    for _ in range(data.draw(st.integers(1, 3), label="damages")):
        files = sorted(path for path in root.rglob("*") if path.is_file())
        if not files:
            return
        target = data.draw(st.sampled_from(files), label="file")
        action = data.draw(st.sampled_from(["damage", "drop", "duplicate"]), label="action")
        if action == "damage":
            damage_file(target, data)
        elif action == "drop":
            target.unlink()
        else:
            folders = sorted({path.parent for path in files})
            into = data.draw(st.sampled_from(folders), label="into")
            if into != target.parent:
                shutil.copyfile(target, into / target.name)


def check_contract(path: Path, here: Path) -> None:
    """Loading `path` succeeds or raises LoadError; validate() returns; no stray file."""
    private_tmp = here / "tmp"
    private_tmp.mkdir()
    before = {folder: sorted(os.listdir(folder)) for folder in (here, private_tmp)}
    with pytest.MonkeyPatch.context() as patch, deadline(TIMEOUT):
        patch.setattr(tempfile, "tempdir", str(private_tmp))
        try:
            load_state_from_file(path)
            event("loaded")  # a flip in tensor bytes, say: fine
        except LoadError:
            event("LoadError")
        if hasattr(flambe_compat, "validate"):
            flambe_compat.validate(path)
    assert {folder: sorted(os.listdir(folder)) for folder in before} == before


@settings(deadline=None)
@given(source=st.sampled_from(FOLDERS), data=st.data())
def test_damaged_folder_loads_or_raises_load_error(source: Path, data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as here:
        root = copy_good(source, Path(here))
        damage_folder(root, data)
        check_contract(root, Path(here))


@settings(deadline=None)
@given(source=st.sampled_from(TARBALLS), inside=st.booleans(), data=st.data())
def test_damaged_tarball_loads_or_raises_load_error(
    source: Path, inside: bool, data: st.DataObject
) -> None:
    """Damage the compressed bytes, or the members (then compress them again)."""
    with tempfile.TemporaryDirectory() as here:
        path = copy_good(source, Path(here))
        if inside:
            unpacked = Path(here) / "unpacked"
            with tarfile.open(path) as tar:
                tar.extractall(unpacked, filter="data")  # a good corpus archive
            (root,) = unpacked.iterdir()
            if root.is_dir():
                damage_folder(root, data)
            else:
                damage_file(root, data)
            path.unlink()
            shutil.move(_tarred(root), path)
            shutil.rmtree(unpacked)
        else:
            damage_file(path, data)
        check_contract(path, Path(here))


@settings(deadline=None)
@given(source=st.sampled_from(PICKLES), data=st.data())
def test_damaged_pickle_loads_or_raises_load_error(source: Path, data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as here:
        path = copy_good(source, Path(here))
        damage_file(path, data)
        check_contract(path, Path(here))


def _tarred(root: Path) -> Path:
    """`root` (a folder or a file) as a tar.gz beside it, named like flambe names members."""
    if root.is_dir():
        return tar_folder(root)
    archive = root.with_name(root.name + ".tar.gz")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, root.name)
    return archive


def test_a_gzip_header_cut_inside_its_extra_field(tmp_path: Path) -> None:
    """Found by the fuzz test: tarfile's own gzip reader raised TypeError here."""
    path = tmp_path / "cut.tar.gz"
    path.write_bytes(b"\x1f\x8b\x08\x04" + bytes(6))  # FEXTRA set, its length missing
    with pytest.raises(LoadError, match=r"not a readable tar\.gz"):
        load_state_from_file(path)


CONFIG_TOKENS = [
    "!",
    "&a ",
    "*a",
    "<<: *a\n",
    "!!python/object/apply:os.system ",
    "!!python/name:builtins.eval ",
    "!@ ",
    "!call ",
    "!$ 0",
    "!torch.Linear ",
    "!sample_models.MLP ",
    "__class__",
    "model[inner]",
    "[",
    "]",
    "{",
    "}",
    ": ",
    "- ",
    "\n  ",
    ".",
    "'",
    "~",
    "1e-05",
    "yes",
    "---\n",
]


@settings(deadline=None)
@given(
    edits=st.lists(
        st.tuples(
            st.integers(0, 1 << 12),
            st.sampled_from(CONFIG_TOKENS) | st.text(max_size=3),
            st.integers(0, 4),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_damaged_config_rebuilds_or_raises_load_error(edits: list[tuple[int, str, int]]) -> None:
    """Tokens of YAML, tags and links spliced into a good root config: `load()`'s rebuild
    succeeds or raises `LoadError`, nothing else."""
    legacy_module("sample_models")
    good = load_state_from_file(CORPUS / "0.4.18-zip" / "wrapper-pkl.pkl")
    text = good._metadata[""]["_flambe_config"]
    for offset, token, cut in edits:
        at = offset % (len(text) + 1)
        text = text[:at] + token + text[at + cut :]
    state = State(good)
    state._metadata = {**good._metadata, "": {**good._metadata[""], "_flambe_config": text}}
    with deadline(TIMEOUT):
        try:
            rebuild(state)
            event("rebuilt")
        except LoadError:
            event("LoadError")
