"""What the benchmarks share: flambe-shaped states, the measurements, the report.

Each benchmark saves and loads one state with flambe_compat and, as the yardstick, the
same tensors with `torch.save`/`torch.load` in one flat file (zip format), and measures
a floor: the same tensor bytes written and read as one plain file per node. flambe
0.4.18 is timed the same way in the oracle's process when the oracle is installed.
Loads are timed until every page of every tensor has been read (`timing.touch`). Times
are best of N; peak memory is measured in a fresh process per save and per load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from benchmarks.timing import Step, best_times, nothing, remove, save_load_steps
from flambe_compat import State, load_state_from_file, save_state_to_file
from flambe_compat.tree import node_metadata
from flambe_compat.write import archive_path
from tests.oracle import REPO, find_oracle

MIB = 1 << 20
COLUMNS = 256
BLOCK_SOURCE = "class Block(Component, torch.nn.Module):\n    def __init__(self, width=256):\n"
STEPS = {"save": "torch.save", "load": "torch.load"}
"""The measured steps, and the flat-file yardstick of each."""
ORACLE_BENCH = Path(__file__).resolve().parent / "oracle_bench.py"


def arguments(
    description: str, size_mb: float, nodes: int, protocol: int | None = None
) -> argparse.Namespace:
    """The command line every benchmark takes, with its own defaults."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--size-mb", type=float, default=size_mb, help="MiB of float32 tensors")
    parser.add_argument("--nodes", type=int, default=nodes, help="Components, the root included")
    parser.add_argument("--repeats", type=int, default=3, help="timings are best of N")
    parser.add_argument("--no-flambe", action="store_true", help="do not time flambe 0.4.18")
    parser.add_argument(
        "--protocol",
        type=int,
        choices=(1, 2),
        default=protocol,
        help="the format to save (default: the library's)",
    )
    return parser.parse_args()


def flambe_state(size_mb: float, nodes: int) -> State:
    """A State shaped like flambe's: the root and `nodes - 1` child Components `block<i>`,
    each an `nn.Module` with a `weight` (float32, `size_mb` MiB over all) and a `bias`."""
    rows = max(1, int(size_mb * MIB) // (4 * COLUMNS * nodes))
    generator = torch.Generator().manual_seed(0)
    prefixes = ["", *(f"block{i}" for i in range(1, nodes))]
    state = State()
    state._metadata = {"_flambe_directories": set(prefixes), "keep_vars": False}
    for prefix in prefixes:
        dotted = f"{prefix}." if prefix else ""
        state[dotted + "weight"] = torch.randn(rows, COLUMNS, generator=generator)
        state[dotted + "bias"] = torch.randn(rows, generator=generator)
        config = f"!Block\nwidth: {COLUMNS}\n"
        state._metadata[prefix] = {
            "version": 1,
            **node_metadata("Model" if prefix == "" else "Block", "0.0.0", BLOCK_SOURCE, config),
        }
    return state


def tensor_bytes(state: Mapping[str, Any]) -> int:
    return sum(v.numel() * v.element_size() for v in state.values())


def floor_save(state: Mapping[str, torch.Tensor], folder: Path) -> None:
    """The floor's save: each node's tensor bytes, one after the other, in one plain file."""
    nodes: dict[str, list[torch.Tensor]] = {}
    for key, value in state.items():
        nodes.setdefault(key.rpartition(".")[0], []).append(value)
    folder.mkdir()
    for number, tensors in enumerate(nodes.values()):
        with (folder / f"{number}.bin").open("wb") as file:
            for tensor in tensors:
                file.write(tensor.numpy().data)


def floor_load(folder: Path) -> list[bytearray]:
    """The floor's load: every file of `folder` read whole into memory."""
    loaded = []
    for path in sorted(folder.iterdir()):
        with path.open("rb", buffering=0) as file:
            buffer = bytearray(os.fstat(file.fileno()).st_size)
            file.readinto(buffer)
            loaded.append(buffer)
    return loaded


def floor_steps(state: Mapping[str, torch.Tensor], folder: Path) -> dict[str, Step]:
    return {
        "floor_save": (lambda: floor_save(state, folder), lambda: remove(folder)),
        "floor_load": (lambda: floor_load(folder), nothing),
    }


def peak_growths(
    args: argparse.Namespace, compress: bool, state: State, work: Path
) -> dict[str, tuple[int, int]]:
    """Peak RSS growth of each save and load (ours, and torch's of the flat file), each in
    a process of its own (`benchmarks.peak_rss`): for `state`, and for a state of the same
    nodes with twice its tensor bytes, which tells the memory per tensor byte from the
    constant part."""
    commands: list[tuple[str, list[str]]] = []
    written: list[Path] = []
    for size_mb in (args.size_mb, 2 * args.size_mb):
        one = state if size_mb == args.size_mb else flambe_state(size_mb, args.nodes)
        sized = argparse.Namespace(**{**vars(args), "size_mb": size_mb})
        base, flat = work / f"rss-{size_mb}", work / f"rss-{size_mb}.pt"
        archive = archive_path(base, compress, False)
        protocol = {} if args.protocol is None else {"protocol": args.protocol}
        save_state_to_file(one, base, compress=compress, **protocol)
        torch.save(dict(one), flat)
        written += [archive, flat]
        measured = {
            "save": ["save", "flambe_compat", str(archive), *state_flags(sized, compress)],
            "load": ["load", "flambe_compat", str(archive)],
            "torch_save": ["save", "torch", str(flat), *state_flags(sized, False)],
            "torch_load": ["load", "torch", str(flat)],
        }
        commands += measured.items()
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.peak_rss"],
        input=json.dumps([command for _, command in commands]),
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    for path in written:
        remove(path)
    growths: dict[str, list[int]] = {}
    for (step, _), rss in zip(commands, json.loads(done.stdout), strict=True):
        growths.setdefault(step, []).append((rss["after"] - rss["before"]) * 1024)
    return {step: (one, two) for step, (one, two) in growths.items()}


def memory_line(doing: str, growth: tuple[int, int], size: int) -> str:
    """The peak RSS growth over the tensor bytes, then split into the part per tensor
    byte (from the state of twice the bytes) and the constant part."""
    per_byte = (growth[1] - growth[0]) / size
    constant = growth[0] - per_byte * size
    return (
        f"{doing} {growth[0] / size:.2f} x the tensor bytes = "
        f"{per_byte:.2f} per tensor byte + {constant / MIB:.1f} MiB"
    )


def state_flags(args: argparse.Namespace, compress: bool) -> list[str]:
    """How `peak_rss save` rebuilds the benchmark's state and saves it as the benchmark does."""
    flags = ["--size-mb", str(args.size_mb), "--nodes", str(args.nodes)]
    if args.protocol is not None:
        flags += ["--protocol", str(args.protocol)]
    return [*flags, "--compress"] if compress else flags


def flambe_times(state: State, flat: Path, work: Path, compress: bool, repeats: int) -> Any:
    """flambe 0.4.18's times (and torch's, in the same process), or None without the oracle."""
    oracle = find_oracle()
    if oracle is None:
        return None
    metadata = work / "metadata.json"
    plain = {k: sorted(v) if isinstance(v, set) else v for k, v in state._metadata.items()}
    metadata.write_text(json.dumps(plain))
    flags = ["--compress"] if compress else []
    return oracle.run(
        ORACLE_BENCH, str(flat), str(metadata), str(work), *flags, "--repeats", str(repeats)
    )


def header(name: str, args: argparse.Namespace, size: int, what: str) -> str:
    return (
        f"{name}: {size / MIB:.1f} MiB of float32 over {args.nodes} nodes ({what}), "
        f"best of {args.repeats}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )


def run_benchmark(name: str, args: argparse.Namespace, compress: bool = False) -> None:
    """Measure and print the ratios for a state of `args.size_mb` MiB over `args.nodes`."""
    state = flambe_state(args.size_mb, args.nodes)
    size, repeats = tensor_bytes(state), args.repeats
    with tempfile.TemporaryDirectory(prefix=f"{name}-") as scratch:
        work = Path(scratch)
        base, flat = work / "ours", work / "flat.pt"
        archive = archive_path(base, compress, False)
        protocol = {} if args.protocol is None else {"protocol": args.protocol}
        steps = save_load_steps(
            lambda: save_state_to_file(state, base, compress=compress, **protocol),
            lambda: load_state_from_file(archive),
            archive,
            dict(state),
            flat,
        )
        times = best_times(repeats, {**steps, **floor_steps(state, work / "floor")})
        remove(archive)
        peaks = peak_growths(args, compress, state, work)
        flambe = None if args.no_flambe else flambe_times(state, flat, work, compress, repeats)
    container = "tar.gz" if compress else "folder"
    written = "default protocol" if args.protocol is None else f"protocol {args.protocol}"
    print(header(name, args, size, f"{container}, {written}"))
    for step, yardstick in STEPS.items():
        print(step_line(f"{step} ratio", times, step, f"torch_{step}", "flambe_compat", yardstick))
    for step, yardstick in STEPS.items():
        label, torch_step = f"floor {step} ratio", f"torch_{step}"
        print(step_line(label, times, f"floor_{step}", torch_step, "floor", yardstick))
    for step, doing in (("save", "saving"), ("load", "loading")):
        ours = memory_line(f"peak RSS while {doing}:", peaks[step], size)
        theirs = memory_line(f"{STEPS[step]} of the flat file", peaks[f"torch_{step}"], size)
        print(f"{ours} ({theirs})")
    if flambe is None:
        print("flambe 0.4.18: not timed (--no-flambe, or the oracle is not installed)")
        return
    for step, yardstick in STEPS.items():
        label = f"flambe 0.4.18 {step} ratio"
        print(step_line(label, flambe, step, f"torch_{step}", "flambe", yardstick))
    print(
        "flambe_compat / flambe 0.4.18 (ratio of the ratios): "
        + ", ".join(
            f"{step} {relative(times, step) / relative(flambe, step):.2f}" for step in STEPS
        )
    )


def relative(times: Mapping[str, float], step: str) -> float:
    """`times[step]` over `times["torch_" + step]`: the time relative to plain torch."""
    return times[step] / times[f"torch_{step}"]


def ratio_line(label: str, time: float, base: float, who: str, yardstick: str) -> str:
    """`label: time / base (who time s, yardstick base s)`."""
    return f"{label}: {time / base:.2f} ({who} {time:.3f} s, {yardstick} {base:.3f} s)"


def step_line(
    label: str, times: Mapping[str, float], step: str, base: str, who: str, yardstick: str
) -> str:
    """`ratio_line` of wall-clock times, then the ratio of CPU times (see `best_times`)."""
    line = ratio_line(label, times[step], times[base], who, yardstick)
    return f"{line}; CPU time ratio {times['cpu_' + step] / times['cpu_' + base]:.2f}"
