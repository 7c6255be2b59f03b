"""Detection: protocol, revision, layout and payload formats, from names and magic bytes only."""

from __future__ import annotations

import io
import pickle
import shutil
import tarfile
from pathlib import Path

import pytest
import torch

from flambe_compat import validate
from flambe_compat.container import opened
from flambe_compat.detect import Detection, detect
from flambe_compat.payload import LEGACY_TORCH_MAGIC, file_payload_format, payload_format
from tests.corpus import CORPUS, CorpusArchive, archives, copy_of, expected_revision

ARCHIVES = list(archives())
FOLDER_ARCHIVES = [a for a in ARCHIVES if a.layout == "folder"]


def detected(path: Path) -> Detection:
    """The detection of the archive at `path`."""
    with opened(path) as archive:
        return detect(archive)


def tarball(folder: Path, path: Path, member_name: str) -> Path:
    """`folder` packed as flambe packs it, its members named `member_name/...`."""
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname=member_name)
    return path


@pytest.mark.parametrize("archive", ARCHIVES, ids=lambda a: a.id)
def test_corpus_archive_protocol_revision_and_layout(archive: CorpusArchive) -> None:
    detection = detected(archive.path)
    assert (detection.protocol, detection.revision, detection.layout) == (
        1,
        expected_revision(archive),
        archive.layout,
    )
    assert detection.reasons == ()


@pytest.mark.parametrize(
    ("release", "mode", "revision"),
    [
        ("0.4.3", "dir", "1.0"),
        ("0.4.3", "tgz-abs", "1.0"),
        ("0.4.6", "tgz-abs", "1.1"),
        ("0.4.6", "dir", "1.2"),
        ("0.4.11", "tgz", "1.2"),
        ("0.4.11", "tgz-abs", "1.2"),
        ("0.4.13", "dir", "1.3"),
        ("0.4.18", "tgz-abs", "1.4"),
        ("0.4.3", "pkl", "1.4"),
        ("0.4.6", "pkltgz", "1.4"),
    ],
)
def test_expected_revisions_are_the_issue_s(release: str, mode: str, revision: str) -> None:
    matching = [a for a in ARCHIVES if (a.release, a.mode) == (release, mode)]
    assert matching
    assert {expected_revision(a) for a in matching} == {revision}


@pytest.mark.parametrize("archive", ARCHIVES, ids=lambda a: a.id)
def test_corpus_payload_formats(archive: CorpusArchive) -> None:
    formats = detected(archive.path).payload_formats
    if archive.layout == "pickle":
        assert list(formats.values()) == ["pickle"]
        return
    nodes = len(archive.directories)
    assert len(formats) == 2 * nodes
    states = {p: f for p, f in formats.items() if p.endswith("state.pt")}
    stashes = {p: f for p, f in formats.items() if p.endswith("stash.pkl")}
    assert set(states.values()) == {archive.torch_format}
    raw_stash = archive.release_tuple < (0, 4, 5)
    assert set(stashes.values()) == {"pickle" if raw_stash else archive.torch_format}
    assert len(states) == len(stashes) == nodes


def test_detection_unpickles_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("detection must not unpickle")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)
    for archive in FOLDER_ARCHIVES:
        if archive.mode == "dir":
            assert detected(archive.path).revision == expected_revision(archive)


def test_a_14_folder_without_requirements_is_13(tmp_path: Path) -> None:
    folder = copy_of("0.4.18-legacy/wrapper-dir", tmp_path)
    (folder / "requirements.txt").unlink()
    assert detected(folder) == Detection(
        "folder", 1, "1.3", detected(CORPUS / "0.4.18-legacy/wrapper-dir").payload_formats
    )


def test_a_14_folder_with_a_12_root_state_is_judged_as_14(tmp_path: Path) -> None:
    """requirements.txt dates it; the schema then names the root state.pt lacking metadata."""
    folder = copy_of("0.4.18-legacy/wrapper-dir", tmp_path)
    shutil.copyfile(CORPUS / "0.4.11-legacy/wrapper-dir/state.pt", folder / "state.pt")
    detection = detected(folder)
    assert (detection.protocol, detection.revision) == (1, "1.4")
    report = validate(folder)
    assert not report.valid
    assert {problem.path for problem in report.problems} == {"state.pt"}


def test_a_10_folder_with_requirements_fits_no_revision(tmp_path: Path) -> None:
    folder = copy_of("0.4.3-legacy/counter-dir", tmp_path)
    (folder / "requirements.txt").write_text("torch==1.3.1\n")
    detection = detected(folder)
    assert (detection.protocol, detection.revision) == (1, None)
    (reason,) = detection.reasons
    assert "fits no known revision" in reason
    assert "raw-pickle stash.pkl (1.0)" in reason
    assert "requirements.txt (1.4)" in reason


def test_a_10_folder_with_a_13_state_fits_no_revision(tmp_path: Path) -> None:
    folder = copy_of("0.4.3-legacy/counter-dir", tmp_path)
    shutil.copyfile(CORPUS / "0.4.13-legacy/counter-dir/state.pt", folder / "state.pt")
    (reason,) = detected(folder).reasons
    assert "raw-pickle stash.pkl (1.0)" in reason
    assert "state.pt with _metadata (1.3+)" in reason


def test_whole_path_tar_members_date_a_folder_to_11(tmp_path: Path) -> None:
    folder = CORPUS / "0.4.11-legacy/wrapper-dir"
    detection = detected(tarball(folder, tmp_path / "m.tar.gz", "home/user/models/m"))
    assert (detection.protocol, detection.revision, detection.reasons) == (1, "1.1", ())


def test_whole_path_tar_members_and_requirements_fit_no_revision(tmp_path: Path) -> None:
    folder = CORPUS / "0.4.18-zip/counter-dir"
    detection = detected(tarball(folder, tmp_path / "m.tar.gz", "home/user/models/m"))
    assert detection.revision is None
    (reason,) = detection.reasons
    assert "tar members named by the whole save path" in reason
    assert "requirements.txt (1.4)" in reason


@pytest.mark.parametrize(("member", "revision"), [("m.pkl", "1.4"), ("home/user/m.pkl", "1.1")])
def test_pickle_only_tarballs(tmp_path: Path, member: str, revision: str) -> None:
    with tarfile.open(tmp_path / "m.pkl.tar.gz", "w:gz") as tar:
        tar.add(CORPUS / "0.4.13-legacy/mlp-pkl.pkl", arcname=member)
    detection = detected(tmp_path / "m.pkl.tar.gz")
    assert (detection.layout, detection.protocol, detection.revision) == ("pickle", 1, revision)
    assert detection.payload_formats == {Path(member).name: "pickle"}


def test_a_folder_without_protocol_version_is_not_a_save_folder(tmp_path: Path) -> None:
    folder = copy_of("0.4.18-zip/counter-dir", tmp_path)
    (folder / "protocol_version.txt").unlink()
    detection = detected(folder)
    assert (detection.layout, detection.protocol, detection.revision) == ("folder", None, None)
    assert detection.reasons == ("not a flambe save folder: no protocol_version.txt at its root",)


def test_an_empty_folder_is_not_a_save_folder(tmp_path: Path) -> None:
    detection = detected(tmp_path)
    assert (detection.protocol, detection.revision, detection.payload_formats) == (None, None, {})
    assert "not a flambe save folder" in detection.reasons[0]


@pytest.mark.parametrize("text", ["99", "abc", "0", "1.5"])
def test_an_unknown_protocol_version(tmp_path: Path, text: str) -> None:
    folder = copy_of("0.4.18-zip/counter-dir", tmp_path)
    (folder / "protocol_version.txt").write_text(text + "\n")
    detection = detected(folder)
    assert (detection.protocol, detection.revision) == (None, None)
    (reason,) = detection.reasons
    assert f"protocol_version.txt says {text!r}" in reason
    assert "not a protocol we know" in reason


def test_a_pickle_file_that_is_not_a_pickle(tmp_path: Path) -> None:
    path = tmp_path / "m.pkl"
    path.write_bytes(b"not a pickle at all")
    detection = detected(path)
    assert (detection.layout, detection.protocol, detection.revision) == ("pickle", None, None)
    assert detection.payload_formats == {"m.pkl": "unknown"}
    assert detection.reasons == ("not a pickle nor a torch file",)


def torch_bytes(zip_format: bool) -> bytes:
    """A small `torch.save` file, in the zip format or the legacy one."""
    buffer = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buffer, _use_new_zipfile_serialization=zip_format)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (torch_bytes(zip_format=True), "zip"),
        (torch_bytes(zip_format=False), "legacy"),
        (LEGACY_TORCH_MAGIC, "legacy"),
        (pickle.dumps({"a": 1}, protocol=2), "pickle"),
        (pickle.dumps({"a": 1}, protocol=5), "pickle"),
        (pickle.dumps({"a": 1}, protocol=0), "unknown"),
        (b"\x80\x06\x95", "unknown"),
        (b"\x1f\x8b\x08\x00", "unknown"),
        (b"PK\x05\x06", "unknown"),
        (b"", "unknown"),
        (b"\x80", "unknown"),
    ],
    ids=[
        "torch-zip",
        "torch-legacy",
        "legacy-magic",
        "pickle-2",
        "pickle-5",
        "pickle-0",
        "pickle-6",
        "gzip",
        "empty-zip",
        "nothing",
        "one-byte",
    ],
)
def test_payload_format_from_magic_bytes(head: bytes, kind: str) -> None:
    assert payload_format(head[:512]) == kind


def test_a_tar_header_starting_with_the_legacy_magic_is_unknown(tmp_path: Path) -> None:
    folder = copy_of("0.4.18-legacy/counter-dir", tmp_path)
    path = folder / "stash.pkl"
    name = (LEGACY_TORCH_MAGIC + b"x").decode("latin-1")
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT, encoding="latin-1") as tar:
        member = tarfile.TarInfo(name)
        member.size = 3
        tar.addfile(member, io.BytesIO(b"abc"))
    head = path.read_bytes()[:512]
    assert head.startswith(LEGACY_TORCH_MAGIC)
    assert payload_format(head) == "unknown"
    assert file_payload_format(path) == "unknown"
    assert detected(folder).payload_formats["stash.pkl"] == "unknown"
