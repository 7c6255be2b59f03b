"""What the benchmarks share: flambe-shaped states, the measurements, the report.

Each benchmark saves and loads one state with flambe_compat and, as the yardstick, the
same tensors with `torch.save`/`torch.load` in one flat file (zip format); flambe 0.4.18
is timed the same way in the oracle's process when the oracle is installed. Times are
best of N; peak memory is measured in a fresh process per load.
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

from benchmarks.timing import best_times, remove, save_load_steps
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


def arguments(description: str, size_mb: float, nodes: int) -> argparse.Namespace:
    """The command line every benchmark takes, with its own defaults."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--size-mb", type=float, default=size_mb, help="MiB of float32 tensors")
    parser.add_argument("--nodes", type=int, default=nodes, help="Components, the root included")
    parser.add_argument("--repeats", type=int, default=3, help="timings are best of N")
    parser.add_argument("--no-flambe", action="store_true", help="do not time flambe 0.4.18")
    parser.add_argument(
        "--protocol", type=int, choices=(1, 2), help="the format to save (default: the library's)"
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


def tensor_bytes(state: State) -> int:
    return sum(v.numel() * v.element_size() for v in state.values())


def peak_load_ratio(loader: str, path: Path, size: int) -> float:
    """Peak RSS growth while `loader` loads `path` in a fresh process, over `size` bytes."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.peak_rss", loader, str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    rss = json.loads(done.stdout)
    return float(rss["after"] - rss["before"]) * 1024 / size


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


def run_benchmark(name: str, args: argparse.Namespace, compress: bool = False) -> None:
    """Measure and print the ratios for a state of `args.size_mb` MiB over `args.nodes`."""
    state = flambe_state(args.size_mb, args.nodes)
    size, repeats = tensor_bytes(state), args.repeats
    with tempfile.TemporaryDirectory(prefix=f"{name}-") as scratch:
        work = Path(scratch)
        base, flat = work / "ours", work / "flat.pt"
        archive = archive_path(base, compress, False)
        protocol = {} if args.protocol is None else {"protocol": args.protocol}
        times = best_times(
            repeats,
            save_load_steps(
                lambda: save_state_to_file(state, base, compress=compress, **protocol),
                lambda: load_state_from_file(archive),
                archive,
                dict(state),
                flat,
            ),
        )
        ours_peak = peak_load_ratio("flambe_compat", archive, size)
        torch_peak = peak_load_ratio("torch", flat, size)
        remove(archive)
        flambe = None if args.no_flambe else flambe_times(state, flat, work, compress, repeats)
    container = "tar.gz" if compress else "folder"
    written = "default protocol" if args.protocol is None else f"protocol {args.protocol}"
    print(
        f"{name}: {size / MIB:.1f} MiB of float32 over {args.nodes} nodes "
        f"({container}, {written}), best of {repeats}, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    for step, yardstick in STEPS.items():
        print(ratio_line(f"{step} ratio", times, step, "flambe_compat", yardstick))
    print(
        f"peak RSS while loading / tensor bytes: {ours_peak:.2f} "
        f"(torch.load of the flat file: {torch_peak:.2f})"
    )
    if flambe is None:
        print("flambe 0.4.18: not timed (--no-flambe, or the oracle is not installed)")
        return
    for step, yardstick in STEPS.items():
        print(ratio_line(f"flambe 0.4.18 {step} ratio", flambe, step, "flambe", yardstick))
    print(
        "flambe_compat / flambe 0.4.18 (ratio of the ratios): "
        + ", ".join(
            f"{step} {relative(times, step) / relative(flambe, step):.2f}" for step in STEPS
        )
    )


def relative(times: Mapping[str, float], step: str) -> float:
    """`times[step]` over `times["torch_" + step]`: the time relative to plain torch."""
    return times[step] / times[f"torch_{step}"]


def ratio_line(label: str, times: Mapping[str, float], step: str, who: str, yardstick: str) -> str:
    time, base = times[step], times[f"torch_{step}"]
    return f"{label}: {relative(times, step):.2f} ({who} {time:.3f} s, {yardstick} {base:.3f} s)"
