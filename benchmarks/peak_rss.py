"""Peak memory of saves and loads, each in a process of its own.

    python -m benchmarks.peak_rss < commands.json

stdin holds a JSON list of commands, each one of

    ["load", WHO, PATH]
    ["save", WHO, PATH, "--size-mb", MB, "--nodes", N, ("--protocol", P), ("--compress")]

WHO is `flambe_compat` (`load_state_from_file`, `save_state_to_file`) or `torch`
(`torch.load`, `torch.save` of the state's tensors as one flat dict). A load is followed
by reading every page of every tensor (`timing.touch`), so memory-mapped pages count; a
save first builds the benchmark's state (`common.flambe_state`). Prints a JSON list with,
for each command, `{"before": KiB, "after": KiB}`: the resident set when the measured
step starts and its peak at the end.

torch is imported once; each command runs in a child forked from this process, which
starts no thread of its own, so a command sees none of the others' memory. The peak is
Linux's `VmHWM`, reset to the current resident set (`/proc/self/clear_refs`) just before
the step: the child's peak would otherwise include what it inherited.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

import torch

from benchmarks.common import flambe_state
from benchmarks.timing import touch
from flambe_compat import load_state_from_file, save_state_to_file


def peak_rss_kib() -> int:
    """This process's peak resident set size (`VmHWM`), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def _reset_peak() -> int:
    """Reset `VmHWM` to the current resident set; returns it, in KiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return peak_rss_kib()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="benchmarks.peak_rss command")
    parser.add_argument("step", choices=("save", "load"))
    parser.add_argument("who", choices=("flambe_compat", "torch"))
    parser.add_argument("path", type=Path)
    parser.add_argument("--size-mb", type=float)
    parser.add_argument("--nodes", type=int)
    parser.add_argument("--protocol", type=int)
    parser.add_argument("--compress", action="store_true")
    return parser


def measure(command: list[str]) -> dict[str, int]:
    """Run one command in this process: its resident set before and its peak after, KiB."""
    args = _parser().parse_args(command)
    if args.step == "load":
        load = load_state_from_file if args.who == "flambe_compat" else torch.load
        before = _reset_peak()
        touch(load(args.path))
        return {"before": before, "after": peak_rss_kib()}
    state = flambe_state(args.size_mb, args.nodes)
    protocol = {} if args.protocol is None else {"protocol": args.protocol}
    before = _reset_peak()
    if args.who == "torch":
        torch.save(dict(state), args.path)
    else:
        base = str(args.path).removesuffix(".tar.gz")
        save_state_to_file(state, base, compress=args.compress, overwrite=True, **protocol)
    return {"before": before, "after": peak_rss_kib()}


def _in_child(command: list[str]) -> dict[str, int]:
    """`measure(command)` in a forked child; its traceback goes to stderr if it fails."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        code = 1
        try:
            with os.fdopen(write_end, "w") as out:
                json.dump(measure(command), out)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as results:
        text = results.read()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"peak_rss: {command} failed")
    measured: dict[str, int] = json.loads(text)
    return measured


def main() -> None:
    commands = json.load(sys.stdin)
    print(json.dumps([_in_child([str(part) for part in command]) for command in commands]))


if __name__ == "__main__":
    main()
