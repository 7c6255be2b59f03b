"""Archives named by URLs (`flambe_compat.store`), against real servers on loopback:
moto's S3 server (through s3fs, with boto3 as the independent client), a local
`http.server`, and fsspec's `memory://`.

Every test that reads or writes remotely checks that the source is unchanged and that
nothing is left in a private temporary folder.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import fsspec
import pytest
import s3fs
from moto.core import enable_iam_authentication

from flambe_compat import LoadError, load_state_from_file, save_state_to_file, upgrade, validate
from flambe_compat.cli import main
from flambe_compat.store import StoreError, _Remote, redact, scrub, shown
from tests.corpus import CORPUS, describe
from tests.s3server import FAKE_SECRET, S3Server, closed_port_url

REPO = Path(__file__).resolve().parent.parent
ZIP = CORPUS / "0.4.18-zip"
MODES = {
    "folder": "wrapper-dir",
    "tar.gz": "wrapper-tgz.tar.gz",
    "pkl": "wrapper-pkl.pkl",
    "pkl.tar.gz": "wrapper-pkltgz.pkl.tar.gz",
}
OLD_FOLDER = CORPUS / "0.4.3-legacy" / "wrapper-dir"


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The temporary folder every `tempfile` call uses for this test; must end empty."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", os.fspath(folder))
    yield folder
    assert sorted(p.name for p in folder.iterdir()) == []


def upload(s3: S3Server, bucket: str, local: Path, key: str) -> str:
    """Put a local archive (file or folder) in the bucket with boto3; returns its URL."""
    client = s3.client()
    files = sorted(p for p in local.rglob("*") if p.is_file()) if local.is_dir() else [local]
    for path in files:
        name = key if path == local else f"{key}/{path.relative_to(local).as_posix()}"
        client.put_object(Bucket=bucket, Key=name, Body=path.read_bytes())
    return f"s3://{bucket}/{key}"


def objects(s3: S3Server, bucket: str) -> dict[str, str]:
    """Every key in the bucket with its ETag (as boto3 sees it)."""
    listed = s3.client().list_objects_v2(Bucket=bucket).get("Contents", [])
    return {item["Key"]: item["ETag"] for item in listed}


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def same_report(remote: Any, local: Any) -> bool:
    return {**remote.as_json(), "source": None} == {**local.as_json(), "source": None}


# reading


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_reads_from_s3_as_locally(
    s3: S3Server,
    private_tmp: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    mode: str,
) -> None:
    local = ZIP / MODES[mode]
    bucket = s3.bucket()
    url = upload(s3, bucket, local, f"models/{local.name}")
    before = objects(s3, bucket)

    assert describe(load_state_from_file(url)) == describe(load_state_from_file(local))
    report = validate(url)
    assert report.valid and report.source == url
    assert same_report(report, validate(local))
    code, out, _ = cli(capsys, "inspect", url)
    local_code, local_out, _ = cli(capsys, "inspect", str(local))
    assert (code, out.replace(url, "SOURCE")) == (
        local_code,
        local_out.replace(str(local), "SOURCE"),
    )
    assert cli(capsys, "validate", url)[:2] == (
        0,
        f"{url}: {validate(local).render().split(': ', 1)[1]}\n",
    )

    remote_up = upgrade(url, tmp_path / "remote" / local.name)
    local_up = upgrade(local, tmp_path / "local" / local.name)
    assert remote_up.steps == local_up.steps == ["1.4->2.0"]
    assert remote_up.source == url
    assert isinstance(remote_up.destination, Path)
    assert describe(load_state_from_file(remote_up.destination)) == describe(
        load_state_from_file(local_up.destination)
    )
    assert objects(s3, bucket) == before


def test_upgrade_from_s3_to_s3_and_in_place(s3: S3Server, private_tmp: Path) -> None:
    bucket = s3.bucket()
    url = upload(s3, bucket, OLD_FOLDER, "old/wrapper-dir")
    expected = describe(load_state_from_file(OLD_FOLDER))

    moved = upgrade(url, f"s3://{bucket}/new/wrapper-dir")
    assert moved.destination == f"s3://{bucket}/new/wrapper-dir"
    assert describe(load_state_from_file(f"s3://{bucket}/new/wrapper-dir")) == expected
    assert validate(f"s3://{bucket}/new/wrapper-dir").revision == "2.0"
    with pytest.raises(ValueError, match="existing archive"):
        upgrade(url, f"s3://{bucket}/new/wrapper-dir")

    in_place = upgrade(url)
    assert in_place.backup == f"s3://{bucket}/old/wrapper-dir.bak"
    assert validate(url).revision == "2.0"
    assert validate(f"s3://{bucket}/old/wrapper-dir.bak").revision == "1.0"
    assert describe(load_state_from_file(url)) == expected
    assert upgrade(url).steps == []  # already there: no second backup
    assert not any(key.startswith("old/wrapper-dir.bak.1") for key in objects(s3, bucket))


def test_cli_upgrade_to_s3(
    s3: S3Server, private_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket = s3.bucket()
    code, out, err = cli(capsys, "upgrade", str(OLD_FOLDER), f"s3://{bucket}/up", "--json")
    assert (code, err) == (0, "")
    assert json.loads(out)["results"][0]["destination"] == f"s3://{bucket}/up"
    assert validate(f"s3://{bucket}/up").valid


# writing


@pytest.mark.parametrize("protocol", [1, 2])
@pytest.mark.parametrize(
    ("compress", "pickle_only"), [(False, False), (True, False), (False, True), (True, True)]
)
def test_saves_to_s3_reload(
    s3: S3Server, private_tmp: Path, protocol: int, compress: bool, pickle_only: bool
) -> None:
    state = load_state_from_file(ZIP / "wrapper-dir")
    bucket = s3.bucket()
    atomic = protocol == 2 or compress or pickle_only
    save_state_to_file(
        state, f"s3://{bucket}/m", compress, pickle_only, protocol=protocol, atomic=atomic
    )
    name = "m" + ".pkl" * pickle_only + ".tar.gz" * compress
    url = f"s3://{bucket}/{name}"
    assert describe(load_state_from_file(url)) == describe(state)
    report = validate(url)
    assert report.valid and report.protocol == protocol
    keys = objects(s3, bucket)
    if compress or pickle_only:
        assert list(keys) == [name]
    else:
        assert ("m/manifest.json" in keys) == (protocol == 2)


def test_protocol2_manifest_is_uploaded_last(
    s3: S3Server, private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    order: list[str] = []
    original = s3fs.S3FileSystem.put_file

    def put_file(self: Any, lpath: str, rpath: str, *args: Any, **kwargs: Any) -> Any:
        order.append(rpath.rsplit("/m/", 1)[1])
        return original(self, lpath, rpath, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "put_file", put_file)
    bucket = s3.bucket()
    save_state_to_file(load_state_from_file(ZIP / "wrapper-dir"), f"s3://{bucket}/m")
    assert order[-1] == "manifest.json" and order.count("manifest.json") == 1
    assert sorted(order) == sorted(k.removeprefix("m/") for k in objects(s3, bucket))


KILLED_SAVE = """
import os, signal, sys
import s3fs
from flambe_compat import load_state_from_file, save_state_to_file

original = s3fs.S3FileSystem.put_file

def put_file(self, lpath, rpath, *args, **kwargs):
    if rpath.endswith("manifest.json"):
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, lpath, rpath, *args, **kwargs)

s3fs.S3FileSystem.put_file = put_file
save_state_to_file(load_state_from_file(sys.argv[1]), sys.argv[2])
"""


@pytest.mark.slow
def test_save_killed_before_its_manifest_is_incomplete(
    s3: S3Server, private_tmp: Path, tmp_path: Path
) -> None:
    bucket = s3.bucket()
    url = f"s3://{bucket}/m"
    child_tmp = tmp_path / "child-tmp"
    child_tmp.mkdir()
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_SAVE, str(ZIP / "wrapper-dir"), url],
        env={**os.environ, "TMPDIR": str(child_tmp), "AWS_MAX_ATTEMPTS": "1"},
        cwd=REPO,
        capture_output=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr.decode()
    keys = objects(s3, bucket)
    assert "m/state.pt" in keys and "m/model/state.pt" in keys
    assert "m/manifest.json" not in keys
    report = validate(url)
    assert not report.valid
    assert any("manifest.json" in problem.message for problem in report.problems), report.render()
    with pytest.raises(LoadError, match=r"manifest\.json"):
        load_state_from_file(url)


def test_failed_upload_leaves_nothing(
    s3: S3Server, private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = s3fs.S3FileSystem.put_file

    def put_file(self: Any, lpath: str, rpath: str, *args: Any, **kwargs: Any) -> Any:
        if rpath.endswith("manifest.json"):
            raise ConnectionResetError("the store went away")
        return original(self, lpath, rpath, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "put_file", put_file)
    bucket = s3.bucket()
    with pytest.raises(StoreError, match=r"cannot write the manifest.*the store went away"):
        save_state_to_file(load_state_from_file(ZIP / "wrapper-dir"), f"s3://{bucket}/m")
    assert objects(s3, bucket) == {}


def test_protocol1_folder_needs_atomic_false(s3: S3Server, private_tmp: Path) -> None:
    state = load_state_from_file(ZIP / "wrapper-dir")
    bucket = s3.bucket()
    with pytest.raises(ValueError, match="atomic=False"):
        save_state_to_file(state, f"s3://{bucket}/m", protocol=1)
    assert objects(s3, bucket) == {}
    save_state_to_file(state, f"s3://{bucket}/m", protocol=1, atomic=False)
    assert validate(f"s3://{bucket}/m").revision == "1.4"


def test_existing_remote_archive_needs_overwrite(s3: S3Server, private_tmp: Path) -> None:
    state = load_state_from_file(ZIP / "wrapper-dir")
    counter = load_state_from_file(ZIP / "counter-dir")
    bucket = s3.bucket()
    save_state_to_file(state, f"s3://{bucket}/m")
    before = objects(s3, bucket)
    with pytest.raises(ValueError, match="overwrite=True"):
        save_state_to_file(counter, f"s3://{bucket}/m")
    assert objects(s3, bucket) == before
    save_state_to_file(counter, f"s3://{bucket}/m", overwrite=True)
    assert describe(load_state_from_file(f"s3://{bucket}/m")) == describe(counter)
    assert not any(key.startswith("m/model/") for key in objects(s3, bucket))


def test_memory_round_trip(private_tmp: Path) -> None:
    state = load_state_from_file(ZIP / "wrapper-dir")
    memory = fsspec.filesystem("memory")
    try:
        save_state_to_file(state, "memory://flambe-compat-test/m")
        save_state_to_file(state, "memory://flambe-compat-test/m", compress=True, protocol=1)
        for url in ("memory://flambe-compat-test/m", "memory://flambe-compat-test/m.tar.gz"):
            assert describe(load_state_from_file(url)) == describe(state)
            assert validate(url).valid
    finally:
        memory.rm("/flambe-compat-test", recursive=True)


def test_file_urls_are_local_paths(private_tmp: Path, tmp_path: Path) -> None:
    state = load_state_from_file(f"file://{ZIP / 'counter-dir'}")
    save_state_to_file(state, f"file://{tmp_path / 'saved'}")
    assert (tmp_path / "saved" / "manifest.json").is_file()


# http(s)


@pytest.fixture
def http_corpus() -> Iterator[str]:
    """A local http server (loopback) serving the 0.4.18 corpus folder; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(ZIP))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.mark.parametrize("name", ["wrapper-tgz.tar.gz", "wrapper-pkl.pkl", "mlp-pkltgz.pkl.tar.gz"])
def test_http_reads_single_file_archives(http_corpus: str, private_tmp: Path, name: str) -> None:
    url = f"{http_corpus}/{name}?X-Amz-Signature=sig-not-to-print"
    assert describe(load_state_from_file(url)) == describe(load_state_from_file(ZIP / name))
    report = validate(url)
    assert report.valid and report.source == f"{http_corpus}/{name}?<redacted>"


def test_http_refuses_folders_and_writes(
    http_corpus: str, private_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for url in (f"{http_corpus}/wrapper-dir", f"{http_corpus}/wrapper-dir/"):
        with pytest.raises(StoreError, match="folders cannot be read over http"):
            load_state_from_file(url)
        assert cli(capsys, "validate", url)[0] == 2
    with pytest.raises(StoreError, match="read-only"):
        save_state_to_file(load_state_from_file(ZIP / "counter-dir"), f"{http_corpus}/new")
    secret = f"{http_corpus}/missing.pkl?X-Amz-Signature=sig-not-to-print"
    with pytest.raises(StoreError, match="no such file") as raised:
        load_state_from_file(secret)
    assert "sig-not-to-print" not in str(raised.value)


# bad stores


def assert_no_credential(*texts: str) -> None:
    for text in texts:
        assert FAKE_SECRET not in text
        assert "SECRETVALUE" not in text


def test_unreachable_store(
    s3: S3Server,
    private_tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s3.apply(monkeypatch, endpoint=closed_port_url())
    with pytest.raises(StoreError, match="cannot list") as raised:
        load_state_from_file("s3://bucket/m")
    assert_no_credential(str(raised.value))
    for command in (["validate", "s3://bucket/m"], ["inspect", "s3://bucket/m"]):
        code, out, err = cli(capsys, *command)
        assert code == 2
        assert_no_credential(out, err)
    code, out, err = cli(capsys, "upgrade", "s3://bucket/m", "--json")
    assert code == 2 and "cannot list" in out
    assert_no_credential(out, err)
    with pytest.raises(StoreError):
        save_state_to_file(load_state_from_file(ZIP / "counter-dir"), "s3://bucket/m")


def test_access_denied(s3: S3Server, private_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bucket = s3.bucket()
    url = upload(s3, bucket, ZIP / "wrapper-tgz.tar.gz", "m.tar.gz")
    with enable_iam_authentication():  # the fake key is no IAM user: every request is denied
        with pytest.raises(StoreError, match="access denied") as raised:
            load_state_from_file(url)
        assert_no_credential(str(raised.value))
        code, out, err = cli(capsys, "validate", url, "--json")
    assert code == 2
    assert json.loads(out)["reports"][0]["problems"][0]["rule"] == "store"
    assert_no_credential(out, err)


def test_missing_bucket_or_key(
    s3: S3Server, private_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket = s3.bucket()
    for url in (f"s3://{bucket}/nothing-here", "s3://no-such-bucket-flambe/m"):
        with pytest.raises(StoreError, match="no such file or directory"):
            load_state_from_file(url)
        assert cli(capsys, "inspect", url)[0] == 2


def test_credentials_in_urls_are_refused(
    s3: S3Server, private_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "s3://AKIAFLAMBE:SECRETVALUE@bucket/m"
    with pytest.raises(StoreError, match="credentials in a URL are refused") as raised:
        load_state_from_file(url)
    assert_no_credential(str(raised.value))
    code, out, err = cli(capsys, "validate", url)
    assert code == 2
    assert_no_credential(out, err)
    with pytest.raises(StoreError, match="credentials in a URL"):
        save_state_to_file(load_state_from_file(ZIP / "counter-dir"), url)


def test_unknown_scheme(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(LoadError, match="unknown URL scheme 'ftp'"):
        load_state_from_file("ftp://host/m.tar.gz")
    code, _, err = cli(capsys, "inspect", "nosuch://host/m")
    assert code == 2 and "unknown URL scheme 'nosuch'" in err


@pytest.mark.parametrize(
    ("url", "package", "extra"),
    [
        ("gs://b/m", "gcsfs", "gcs"),
        ("az://c/m", "adlfs", "azure"),
        ("hf://org/repo/m", "huggingface_hub", "hf"),
    ],
)
def test_missing_extra_is_named(url: str, package: str, extra: str) -> None:
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed")
    with pytest.raises(LoadError, match=rf"pip install 'flambe-compat\[{extra}\]'"):
        load_state_from_file(url)


def test_archive_changed_while_read(
    s3: S3Server, private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = s3.bucket()
    url = upload(s3, bucket, ZIP / "wrapper-dir", "m")
    client = s3.client()
    fetch = _Remote._fetch

    def rewrite_after_fetch(self: _Remote, relative: str, *args: Any, **kwargs: Any) -> None:
        fetch(self, relative, *args, **kwargs)
        if relative == "model/config.yaml":  # same size, new bytes: only the ETag tells
            body = client.get_object(Bucket=bucket, Key="m/model/config.yaml")["Body"].read()
            client.put_object(Bucket=bucket, Key="m/model/config.yaml", Body=body.swapcase())

    monkeypatch.setattr(_Remote, "_fetch", rewrite_after_fetch)
    with pytest.raises(StoreError, match="changed while it was read"):
        load_state_from_file(url)


def test_archive_grown_after_listing(
    s3: S3Server, private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = s3.bucket()
    url = upload(s3, bucket, ZIP / "wrapper-tgz.tar.gz", "m.tar.gz")
    client = s3.client()
    listing = _Remote._listing

    def grow_after_listing(self: _Remote) -> dict[str, dict[str, Any]]:
        found = listing(self)
        client.put_object(Bucket=bucket, Key="m.tar.gz", Body=b"\x1f\x8b" + b"0" * (1 << 20))
        return found

    monkeypatch.setattr(_Remote, "_listing", grow_after_listing)
    with pytest.raises(StoreError, match="changed while it was read"):
        load_state_from_file(url)


def test_folder_markers_and_unsafe_names(s3: S3Server, private_tmp: Path) -> None:
    bucket = s3.bucket()
    url = upload(s3, bucket, ZIP / "counter-dir", "m")
    client = s3.client()
    client.put_object(Bucket=bucket, Key="m/", Body=b"")  # what a console's "create folder" makes
    assert validate(url).valid
    client.put_object(Bucket=bucket, Key="m/a/../b", Body=b"x")
    with pytest.raises(StoreError, match="unsafe name"):
        load_state_from_file(url)


def test_remote_size_cap(s3: S3Server, private_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = s3.bucket()
    url = upload(s3, bucket, ZIP / "wrapper-dir", "m")
    monkeypatch.setenv("FLAMBE_COMPAT_MAX_UNPACKED_BYTES", "1000")
    with pytest.raises(StoreError, match="FLAMBE_COMPAT_MAX_UNPACKED_BYTES"):
        load_state_from_file(url)


def test_inner_errors_name_the_url(s3: S3Server, private_tmp: Path) -> None:
    bucket = s3.bucket()
    s3.client().put_object(Bucket=bucket, Key="bad.tar.gz", Body=b"\x1f\x8bnot really gzip")
    url = f"s3://{bucket}/bad.tar.gz"
    with pytest.raises(LoadError) as raised:
        load_state_from_file(url)
    assert str(raised.value).startswith(f"{url}: not a readable tar.gz")
    assert tempfile.gettempdir() not in str(raised.value)


# messages


def test_redaction(monkeypatch: pytest.MonkeyPatch) -> None:
    assert redact("az://user:pw@container/m?sig=x#frag") == "az://container/m?<redacted>"
    assert redact("s3://AKIAKEY@bucket/m") == "s3://bucket/m"
    assert redact("abfs://container@account.dfs.core.windows.net/m") == (
        "abfs://container@account.dfs.core.windows.net/m"
    )
    assert shown("s3://b/m") == "s3://b/m" and shown(Path("a/b")) == "a/b"
    monkeypatch.setenv("MY_STORE_SECRET", "hunter2-hunter2")
    text = "failed https://u:p@h.example/x?token=abc with hunter2-hunter2"
    assert scrub(text) == "failed https://h.example/x?<redacted> with <redacted>"
