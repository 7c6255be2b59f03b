"""The batch form of `flambe-compat validate`, `upgrade` and `export`: many archives at once.

`flambe-compat validate SRC --batch` (or with `--executor` or `--ledger`; the same for
`upgrade SRC [DST]` and `export SRC DST --to FORMAT`) processes every archive below SRC
(a folder or a store prefix) through `flambe_compat.bulk.run_batch`, prints each result
as it arrives (`--jsonl`: one JSON object a line) and a summary at the end, or one
document (`--json`, or `--format sarif` for validate). Exit codes as for one archive: 0
when every archive is fine, 1 when any is invalid or failed, 2 for usage or I/O errors
(nothing found, an unreachable store, an unusable ledger).

>>> parser = argparse.ArgumentParser()
>>> add_batch_arguments(parser)
>>> args = parser.parse_args(["--memory-limit", "512M", "--time-limit", "0"])
>>> args.command = "upgrade"
>>> batch_requested(args), parse_size(args.memory_limit), args.time_limit
(False, 536870912, 0.0)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from typing import TYPE_CHECKING, Any

from .errors import LoadError
from .problems import Problem
from .progress import bar, wanted
from .report import Report
from .sarif import sarif_log
from .store import shown

if TYPE_CHECKING:
    from .bulk import ArchiveResult, Operation, Options, Summary

EXIT_VALID, EXIT_INVALID, EXIT_USAGE = 0, 1, 2
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the batch form (any of `--batch`, `--executor`, `--ledger` asks for it)."""
    group = parser.add_argument_group(
        "batch",
        "process every archive below a folder or store prefix in parallel, each in a "
        "worker with memory and time limits, with results recorded in a resumable ledger",
    )
    group.add_argument(
        "--batch", action="store_true", help="use the batch form (implied by the options below)"
    )
    group.add_argument(
        "--executor",
        metavar="local|dask|dask://HOST:PORT",
        help="a local process pool (default), a Dask LocalCluster, or a Dask scheduler",
    )
    group.add_argument(
        "--ledger",
        metavar="FILE",
        help="JSON Lines record of every result; a rerun skips archives done and unchanged",
    )
    group.add_argument(
        "--workers", type=int, metavar="N", help="pool or LocalCluster size (default: CPUs)"
    )
    group.add_argument(
        "--memory-limit",
        default="4G",
        metavar="SIZE",
        help="memory an archive may use (e.g. 512M, 4G; 0 for none; default 4G)",
    )
    group.add_argument(
        "--time-limit",
        type=float,
        default=900.0,
        metavar="SECONDS",
        help="time an archive may take before its worker is replaced (0 for none; default 900)",
    )
    if parser.get_default("jsonl") is None:  # validate has its own --jsonl
        group.add_argument(
            "--jsonl",
            action="store_true",
            help="print one JSON result per archive as it ends (implies the batch form)",
        )
    group.add_argument(
        "--retries",
        type=int,
        default=3,
        metavar="N",
        help="retries after a transient store error, with backoff (default 3)",
    )


def batch_requested(args: argparse.Namespace) -> bool:
    own_jsonl = args.command != "validate" and getattr(args, "jsonl", False)
    return bool(args.batch or args.executor or args.ledger or own_jsonl)


def parse_size(text: str) -> int | None:
    """Bytes from `512M`, `4G`, `1.5GiB` or a plain number; None for `0`."""
    match = _SIZE.match(text.strip())
    if match is None:
        raise ValueError(f"not a size: {text!r} (try 512M or 4G)")
    size = int(float(match[1]) * _UNITS[match[2].upper()])
    return size or None


def run_batch_command(args: argparse.Namespace, operation: Operation) -> int:
    """Run the batch form of `operation` for parsed `args`; returns the exit code."""
    from .bulk import Summary, run_batch  # fsspec and the executors: the batch form only

    sources = args.paths if operation == "validate" else [args.source]
    destination = None if operation == "validate" else args.destination
    form = "json" if args.json else getattr(args, "format", "text")
    jsonl = getattr(args, "jsonl", False)
    try:
        options = _options(args, operation)
        if len(sources) != 1:
            raise ValueError("the batch form takes one source (a folder or a store prefix)")
        if jsonl and form != "text":
            raise ValueError("--jsonl cannot be combined with --json or --format")
    except ValueError as error:
        print(f"flambe-compat: {error}", file=sys.stderr)
        return EXIT_USAGE
    started = time.monotonic()
    results: list[ArchiveResult] = []
    enabled, force = wanted(args)
    try:
        with bar(operation, enabled=enabled, force=force) as display:
            for result in run_batch(
                operation,
                sources[0],
                destination,
                options=options,
                executor=args.executor or "local",
                jobs=args.workers,
                ledger=args.ledger,
                on_start=lambda _, nbytes: display.update(0, nbytes),
            ):
                results.append(result)
                if result.resumed:
                    continue
                display.advance(result.size, result.relative)
                if jsonl:
                    print(json.dumps(result.as_json()), flush=True)
                elif form == "text":
                    print(render(result), flush=True)
    except LoadError as error:
        print(f"flambe-compat: {error}", file=sys.stderr)
        return EXIT_USAGE
    summary = Summary.of(results, time.monotonic() - started)
    if form == "json":
        print(json.dumps(document(summary, results), indent=1))
    elif form == "sarif":
        print(json.dumps(sarif_log([_as_report(result) for result in results]), indent=1))
    elif jsonl:
        print(json.dumps({"summary": summary.as_json()}))
    else:
        print(summary.render())
    return EXIT_VALID if summary.ok else EXIT_INVALID


def _options(args: argparse.Namespace, operation: Operation) -> Options:
    from .bulk import Options

    """The batch options of `args`; raises `ValueError` for what the batch form refuses."""
    if getattr(args, "plugins", None) or getattr(args, "dry_run", False):
        raise ValueError("--plugins and --dry-run are not available in the batch form")
    if any(getattr(args, flag, False) for flag in ("trusted", "overwrite", "non_atomic")):
        raise ValueError("--trusted, --overwrite and --non-atomic are not in the batch form")
    if getattr(args, "from_files", False):
        raise ValueError("--from-files is not available in the batch form")
    if args.retries < 0:
        raise ValueError("--retries needs a number >= 0")
    extra: dict[str, Any] = {}
    if operation == "upgrade":
        extra["to"] = args.to
    if operation == "export":
        from .export import parse_size as parse_shard_size

        extra["export_to"] = args.to
        extra["max_shard_size"] = parse_shard_size(args.max_shard_size)
    return Options(
        strict=getattr(args, "strict", False),
        allow_globals=tuple(getattr(args, "allow_global", ())),
        memory_limit=parse_size(args.memory_limit),
        time_limit=args.time_limit or None,
        retries=args.retries,
        **extra,
    )


def _as_report(result: ArchiveResult) -> Report:
    """A result as the report SARIF is written from; an archive that could not be judged
    is one problem (rule `not-processed`), so code scanning shows it."""
    problems = list(result.problems)
    if result.verdict == "failed":
        problems.append(Problem("", "not-processed", str(result.reason)))
    return Report(shown(result.path), revision=result.revision, problems=problems)


def render(result: ArchiveResult) -> str:
    """One archive's result as text: a line, and one more per problem."""
    where = result.path
    if result.verdict == "failed":
        return f"{where}: failed: {result.reason}"
    if result.verdict == "invalid":
        lines = [f"{where}: invalid (revision {result.revision or '?'})"]
        return "\n".join([*lines, *(f"  {p.render(where)}" for p in result.problems)])
    if result.verdict == "upgraded":
        return f"{where} -> {result.output}: upgraded from revision {result.revision}"
    if result.verdict == "current":
        return f"{where}: already at the target revision ({result.revision})"
    if result.verdict == "exported":
        return f"{where} -> {result.output}: exported, verified"
    return f"{where}: valid (revision {result.revision})"


def document(summary: Summary, results: list[ArchiveResult]) -> dict[str, Any]:
    return {
        "ok": summary.ok,
        "summary": summary.as_json(),
        "results": [{**result.as_json(), "resumed": result.resumed} for result in results],
    }
