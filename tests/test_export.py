"""`flambe_compat.export` and `flambe-compat export`: safetensors, torch and DCP exports.

Each export is checked with the format's own reader (safetensors' `safe_open`,
`torch.load(weights_only=True)`, DCP in a 2-process gloo group) against what
`load_state_from_file` returns; bad input leaves the source as it was and nothing behind.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
import safetensors.torch
import torch
from safetensors import safe_open

from flambe_compat import LoadError, State, export, load_state_from_file, save_state_to_file
from flambe_compat.cli import main
from flambe_compat.export import ExportError, parse_size
from flambe_compat.tree import node_metadata
from tests.corpus import CORPUS, snapshot

REPO = Path(__file__).resolve().parent.parent
SOURCES = [
    CORPUS / "0.4.18-zip" / "wrapper-dir",
    CORPUS / "0.4.13-legacy" / "wrapper-tgz.tar.gz",
    CORPUS / "0.4.3-legacy" / "mlp-pkl.pkl",
]


def made_state() -> State:
    """Two Components; tied, sliced and transposed views of one storage; every kind of
    dtype and shape; non-tensor state."""
    generator = torch.Generator().manual_seed(0)
    embedding = torch.randn(6, 4, generator=generator)
    state = State()
    state._metadata = {
        "_flambe_directories": {"", "encoder"},
        "keep_vars": False,
        "": {"version": 1, **node_metadata("Model", "1.2.0", "class Model: ...", "!Model\n")},
        "encoder": node_metadata("Encoder", "0.3.1", "class Encoder: ...", "!Encoder\nk: 2\n"),
    }
    state["encoder.embedding.weight"] = embedding
    state["encoder.embedding.first_row"] = embedding[0]
    state["encoder.tied"] = embedding  # one node's state.pt keeps the sharing
    state["encoder.transposed"] = embedding.t()
    state["encoder.scale"] = torch.tensor(float("nan"))
    state["encoder.mask"] = torch.tensor([True, False, True])
    state["encoder.counts"] = torch.arange(10, dtype=torch.int64)
    state["encoder.half"] = torch.randn(3, 5, generator=generator).to(torch.bfloat16)
    state["encoder.empty"] = torch.zeros(0, 3)
    state["encoder.signed_zero"] = torch.tensor([-0.0, 0.0])
    for index in range(4):
        state[f"layers.{index}.weight"] = torch.randn(32, 8, generator=generator)
    state["encoder.name"] = "enc"
    state["steps"] = [1, 2, 3]
    state["settings"] = {"lr": 0.5, "tags": ["a", "b"], "nothing": None}
    return state


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("export-source") / "model"
    save_state_to_file(made_state(), path)
    return path


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal dtype, shape and bytes (NaN equals NaN, -0.0 differs from 0.0)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    raw_a, raw_b = a.reshape(-1), b.reshape(-1)
    if a.dtype == torch.bool:
        return torch.equal(raw_a, raw_b)
    return torch.equal(raw_a.view(torch.uint8), raw_b.view(torch.uint8))


def read_safetensors(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Every tensor of a safetensors export (all shards) and the first shard's metadata."""
    names = sorted(p.name for p in folder.glob("*.safetensors"))
    tensors: dict[str, torch.Tensor] = {}
    metadata: dict[str, str] = {}
    for name in names:
        with safe_open(str(folder / name), framework="pt") as file:
            metadata = metadata or file.metadata()
            tensors.update({key: file.get_tensor(key) for key in file.keys()})  # noqa: SIM118
    return tensors, metadata


def rebuilt(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> dict[str, torch.Tensor]:
    """The tensors with every name stored once put back as its view of the kept tensor."""
    whole = dict(tensors)
    for name, view in json.loads(metadata["flambe_compat.shared"]).items():
        kept = tensors[view["of"]]
        whole[name] = kept.as_strided(view["shape"], view["stride"], view["offset"])
    return whole


def leftovers(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if ".flambe-compat-" in name)


def test_safetensors_stores_shared_memory_once_and_loses_nothing(
    archive: Path, tmp_path: Path
) -> None:
    result = export(archive, tmp_path / "out", to="safetensors")
    loaded = load_state_from_file(archive)
    tensors, metadata = read_safetensors(tmp_path / "out")
    assert result.files == ["model.safetensors"]
    # the tied, sliced and transposed names share the embedding's storage: kept once
    assert "encoder.embedding.weight" in tensors
    assert {"encoder.tied", "encoder.transposed", "encoder.embedding.first_row"}.isdisjoint(tensors)
    assert result.shared == {
        "encoder.embedding.first_row": "encoder.embedding.weight",
        "encoder.tied": "encoder.embedding.weight",
        "encoder.transposed": "encoder.embedding.weight",
    }
    assert metadata["encoder.tied"] == "encoder.embedding.weight"  # safetensors' convention
    whole = rebuilt(tensors, metadata)
    expected = {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
    assert whole.keys() == expected.keys()
    assert all(same(whole[key], value) for key, value in expected.items())
    assert math.isnan(whole["encoder.scale"].item())
    assert json.loads(metadata["flambe_compat.state"]) == {
        "encoder.name": "enc",
        "steps": [1, 2, 3],
        "settings": {"lr": 0.5, "tags": ["a", "b"], "nothing": None},
    }
    nodes = json.loads(metadata["flambe_compat.metadata"])
    assert sorted(nodes["_flambe_directories"]) == ["", "encoder"]
    assert nodes["encoder"]["_flambe_class"] == "Encoder"
    assert nodes["encoder"]["_flambe_version"] == "0.3.1"
    assert nodes["encoder"]["_flambe_config"] == "!Encoder\nk: 2\n"
    assert metadata["format"] == "pt"
    # safetensors' own loader reads it
    plain = safetensors.torch.load_file(tmp_path / "out" / "model.safetensors")
    assert same(plain["layers.3.weight"], loaded["layers.3.weight"])


def test_safetensors_shards_as_hugging_face_does(archive: Path, tmp_path: Path) -> None:
    result = export(archive, tmp_path / "out", to="safetensors", max_shard_size=1500)
    shards = [name for name in result.files if name.endswith(".safetensors")]
    count = len(shards)
    assert count > 2
    assert shards == [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]
    assert result.files[-1] == "model.safetensors.index.json"
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    tensors, metadata = read_safetensors(tmp_path / "out")
    assert index["metadata"]["total_size"] == sum(
        t.numel() * t.element_size() for t in tensors.values()
    )
    assert index["weight_map"].keys() == tensors.keys()
    for shard in shards:
        with safe_open(str(tmp_path / "out" / shard), framework="pt") as file:
            keys = list(file.keys())
            size = sum(file.get_tensor(k).numel() * file.get_tensor(k).element_size() for k in keys)
        assert all(index["weight_map"][key] == shard for key in keys)
        assert size <= 1500 or len(keys) == 1  # a larger tensor is a shard of its own
    loaded = load_state_from_file(archive)
    whole = rebuilt(tensors, metadata)
    assert all(same(whole[k], v) for k, v in loaded.items() if isinstance(v, torch.Tensor))


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: f"{p.parent.name}/{p.name}")
@pytest.mark.parametrize("to", ["safetensors", "torch", "dcp"])
def test_corpus_archives_export(source: Path, to: Any, tmp_path: Path) -> None:
    destination = tmp_path / "out"
    export(source, destination, to=to)
    loaded = load_state_from_file(source)
    tensors = {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
    if to == "safetensors":
        stored, metadata = read_safetensors(destination)
        assert stored.keys() == tensors.keys()
        others = json.loads(metadata["flambe_compat.state"])
        assert others == {k: v for k, v in loaded.items() if k not in tensors}
    elif to == "torch":
        stored = torch.load(destination, weights_only=True)
        assert list(stored) == list(loaded)
        assert {k: v for k, v in stored.items() if k not in tensors} == {
            k: v for k, v in loaded.items() if k not in tensors
        }
    else:
        from torch.distributed.checkpoint import FileSystemReader

        entries = FileSystemReader(str(destination)).read_metadata().state_dict_metadata
        assert entries.keys() == loaded.keys()
        stored = {k: torch.empty_like(v) for k, v in tensors.items()}
        from torch.distributed.checkpoint.state_dict_loader import load

        with pytest.warns(UserWarning, match="single process"):
            load(stored, checkpoint_id=destination)
        recorded = json.loads((destination / "flambe_metadata.json").read_text())
        assert recorded["_flambe_directories"] == sorted(loaded._metadata["_flambe_directories"])
    assert all(same(stored[k], v) for k, v in tensors.items())


def test_torch_export_is_a_flat_weights_only_state_dict(archive: Path, tmp_path: Path) -> None:
    result = export(archive, tmp_path / "model.pt", to="torch")
    assert result.files == ["model.pt"]
    loaded = load_state_from_file(archive)
    flat = torch.load(tmp_path / "model.pt", weights_only=True)
    assert list(flat) == list(loaded)
    assert flat._metadata == loaded._metadata
    assert all(same(flat[k], v) for k, v in loaded.items() if isinstance(v, torch.Tensor))
    # sharing survives in torch's own format
    assert flat["encoder.tied"].data_ptr() == flat["encoder.embedding.weight"].data_ptr()
    # and torch.nn modules take it
    layer = torch.nn.Linear(8, 32, bias=False)
    layer.load_state_dict({"weight": flat["layers.0.weight"]})


def test_dcp_loads_resharded_in_a_two_process_gloo_group(archive: Path, tmp_path: Path) -> None:
    export(archive, tmp_path / "ckpt", to="dcp")
    out = tmp_path / "ranks"
    out.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "tests.dcp_reshard", str(tmp_path / "ckpt"), str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    loaded = flattened(load_state_from_file(archive))
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys() == loaded.keys()
    for key, value in loaded.items():
        if not isinstance(value, torch.Tensor):
            assert ranks[0][key] == ranks[1][key] == value
        elif value.dim() and value.shape[0] >= 2:
            parts = value.chunk(2)
            assert all(same(ranks[r][key], parts[r]) for r in (0, 1)), key
            assert ranks[0][key].shape[0] < value.shape[0]  # each rank holds its part only
        else:
            assert same(ranks[0][key], value) and same(ranks[1][key], value)


def flattened(state: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """DCP's keys: nested dicts flattened with dots."""
    flat: dict[str, Any] = {}
    for key, value in state.items():
        if isinstance(value, dict):
            flat.update(flattened(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def test_overlapping_views_without_a_whole_tensor_are_refused(tmp_path: Path) -> None:
    base = torch.arange(10.0)
    state = State({"a": base[:6], "b": base[4:]})
    state._metadata = {"_flambe_directories": {""}, "": node_metadata("M")}
    save_state_to_file(state, tmp_path / "src")
    before = snapshot(tmp_path / "src")
    with pytest.raises(ExportError, match="share memory and none of them covers it all"):
        export(tmp_path / "src", tmp_path / "out", to="safetensors")
    assert sorted(os.listdir(tmp_path)) == ["src"]
    assert snapshot(tmp_path / "src") == before
    export(tmp_path / "src", tmp_path / "out.pt", to="torch")  # torch keeps views as they are


@pytest.mark.parametrize(
    ("value", "to", "message"),
    [
        (b"raw", "safetensors", "cannot be written as JSON"),
        (torch.eye(3).to_sparse(), "safetensors", "dense ones only"),
        (torch.eye(3).to_sparse(), "dcp", "dense tensors only"),
    ],
    ids=["bytes to safetensors", "sparse to safetensors", "sparse to dcp"],
)
def test_state_a_format_cannot_hold_is_refused(
    value: Any, to: Any, message: str, tmp_path: Path
) -> None:
    state = State({"w": torch.ones(2), "odd": value})
    state._metadata = {"_flambe_directories": {""}, "": node_metadata("M")}
    save_state_to_file(state, tmp_path / "src")
    with pytest.raises(ExportError, match=message):
        export(tmp_path / "src", tmp_path / "out", to=to)
    assert sorted(os.listdir(tmp_path)) == ["src"]


def test_an_export_that_does_not_read_back_leaves_nothing(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = safetensors.torch.save_file

    def corrupting(tensors: dict[str, torch.Tensor], path: Any, **kwargs: Any) -> None:
        real({k: v + 1 if v.is_floating_point() else v for k, v in tensors.items()}, path, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", corrupting)
    with pytest.raises(ExportError, match="did not read back equal"):
        export(archive, tmp_path / "out", to="safetensors")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("to", ["safetensors", "torch", "dcp"])
def test_an_existing_target_is_refused(archive: Path, tmp_path: Path, to: Any) -> None:
    target = tmp_path / "taken"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    before = snapshot(archive)
    with pytest.raises(FileExistsError, match="already exists"):
        export(archive, target, to=to)
    assert sorted(os.listdir(tmp_path)) == ["taken"]
    assert (target / "keep.txt").read_text() == "mine" and len(os.listdir(target)) == 1
    assert snapshot(archive) == before
    export(archive, target, to=to, overwrite=True)
    assert not (target / "keep.txt").exists()
    assert leftovers(tmp_path) == []


def test_an_invalid_source_raises_load_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.pkl"
    broken.write_bytes(b"not a pickle at all")
    with pytest.raises(LoadError, match=r"broken\.pkl"):
        export(broken, tmp_path / "out", to="torch")
    assert sorted(os.listdir(tmp_path)) == ["broken.pkl"]


def test_bad_arguments(archive: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown export format"):
        export(archive, tmp_path / "out", to="onnx")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be positive"):
        export(archive, tmp_path / "out", to="safetensors", max_shard_size=0)
    for text in ("", "5 XB", "-1", "0.1B"):
        with pytest.raises(ValueError):
            parse_size(text)
    assert parse_size("1.5KiB") == 1536


def test_progress_is_reported_per_phase(archive: Path, tmp_path: Path) -> None:
    seen: list[tuple[str, int, int]] = []
    export(
        archive,
        tmp_path / "out",
        to="safetensors",
        max_shard_size=1500,
        progress=lambda *call: seen.append(call),
    )
    phases = [phase for phase, _, _ in seen]
    assert phases.index("verify") > phases.index("write") and set(phases) == {"write", "verify"}
    total = seen[0][2]
    assert total > 0 and all(t == total and 0 <= d <= total for _, d, t in seen)
    assert seen[-1] == ("verify", total, total)


def test_the_command(archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["export", str(archive), str(out), "--to", "safetensors"]) == 0
    printed = capsys.readouterr()
    assert printed.out == (
        f"{archive} -> {out}: safetensors, 1 file, 14 tensors (4.4 KiB), "
        "3 shared names stored once, verified\n"
    )
    assert printed.err == ""  # no progress bar off a terminal
    assert main(["export", str(archive), str(tmp_path / "m.pt"), "--to", "torch", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["format"], result["files"], result["tensors"]) == ("torch", ["m.pt"], 14)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["{archive}", "{tmp}/out", "--to", "dcp"], 2, "already exists"),
        (["{tmp}/missing", "{tmp}/new", "--to", "torch"], 2, "no such file or directory"),
        (["{tmp}/bad.pkl", "{tmp}/new", "--to", "torch"], 1, "cannot export"),
        (["{archive}", "{tmp}/new", "--to", "safetensors", "--max-shard-size", "lots"], 2, "size"),
    ],
    ids=["existing target", "missing source", "invalid source", "bad shard size"],
)
def test_the_command_refuses(
    archive: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    code: int,
    message: str,
) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("x")
    (tmp_path / "bad.pkl").write_bytes(b"\x80\x02garbage")
    before = sorted(os.listdir(tmp_path))
    filled = [a.format(archive=archive, tmp=tmp_path) for a in args]
    assert main(["export", *filled]) == code
    printed = capsys.readouterr()
    assert printed.out == "" and message in printed.err
    assert sorted(os.listdir(tmp_path)) == before


@pytest.fixture
def memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """fsspec's in-memory store, emptied afterwards; temporary folders must end empty."""
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", os.fspath(private))
    store = fsspec.filesystem("memory")
    yield store
    store.rm("/flambe-compat-export", recursive=True)
    assert os.listdir(private) == []


def test_exports_from_and_to_urls(archive: Path, memory: Any, tmp_path: Path) -> None:
    save_state_to_file(load_state_from_file(archive), "memory://flambe-compat-export/src")
    result = export(
        "memory://flambe-compat-export/src", "memory://flambe-compat-export/m.pt", to="torch"
    )
    assert result.destination == "memory://flambe-compat-export/m.pt"
    memory.get("/flambe-compat-export/m.pt", str(tmp_path / "m.pt"))
    flat = torch.load(tmp_path / "m.pt", weights_only=True)
    assert list(flat) == list(load_state_from_file(archive))
    with pytest.raises(ValueError, match="atomic"):
        export(archive, "memory://flambe-compat-export/st", to="safetensors")
    assert not memory.exists("/flambe-compat-export/st")
    export(archive, "memory://flambe-compat-export/st", to="safetensors", atomic=False)
    assert memory.ls("/flambe-compat-export/st", detail=False) == [
        "/flambe-compat-export/st/model.safetensors"
    ]
    with pytest.raises(ValueError, match="existing"):
        export(archive, "memory://flambe-compat-export/m.pt", to="torch")


def test_the_command_with_urls(
    archive: Path, memory: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "memory://flambe-compat-export/cli"
    assert main(["export", str(archive), url, "--to", "dcp", "--non-atomic"]) == 0
    assert capsys.readouterr().out.startswith(f"{archive} -> {url}: dcp, 3 files")
    assert main(["export", str(archive), url, "--to", "dcp", "--non-atomic"]) == 2
    assert "existing" in capsys.readouterr().err
    assert main(["export", "unknown://x/y", str(archive) + "-new", "--to", "torch"]) == 2
    assert "unknown" in capsys.readouterr().err.lower()
