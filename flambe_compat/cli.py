"""The `flambe-compat` command line: `validate`, `inspect`, `upgrade` and `export`.

Paths may be URLs (`s3://...`, see `flambe_compat.store`). Exit codes: 0 when every
archive is valid, 1 when any is invalid, 2 for usage or I/O errors (a path that does not
exist, a folder with no archive in it, a store that cannot be read, an export target that
exists). Long work shows a progress bar on a terminal (see `progress`).

>>> main(["validate", "fixtures/flambe-corpus/0.4.18-zip/counter-dir"])
fixtures/flambe-corpus/0.4.18-zip/counter-dir: valid (protocol 1 revision 1.4, ...)
0
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from . import __version__
from .bulk_cli import add_batch_arguments, batch_requested, run_batch_command
from .container import opened
from .describe import Description, PayloadSummary
from .errors import LoadError
from .layout import (
    COMPRESSED_SUFFIX,
    FLAMBE_CLASS_KEY,
    MANIFEST_FILE_NAME,
    PICKLE_SUFFIX,
    PROTOCOL_VERSION_FILE_NAME,
    VERSION_KEY,
)
from .peek import TensorInfo
from .pipeline import inspect, validate
from .problems import Problem
from .progress import Bar, bar, wanted
from .report import Report
from .revisions import LATEST
from .store import StoreError, fetched, is_url, shown
from .tree import component_folders
from .validate import after_source

if TYPE_CHECKING:
    from .migrate import Migration
    from .upgrade import UpgradeResult

EXIT_VALID, EXIT_INVALID, EXIT_USAGE = 0, 1, 2
ARCHIVE_SUFFIXES = (COMPRESSED_SUFFIX, PICKLE_SUFFIX)
BACKUP_NAME = re.compile(r"\.bak(\.\d+)?$")
"""What in-place upgrades name the originals: a folder search for `upgrade` skips them."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    code: int = args.run(args)
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flambe-compat",
        description="Validate, inspect and upgrade flambe checkpoints without flambe.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    check = commands.add_parser(
        "validate",
        help="check archives (folders are searched); exit 1 if any is invalid",
        description="Check archives against the schema of their revision; no code from an "
        "archive is run. Folders that are not archives are searched for archives.",
    )
    check.add_argument("paths", nargs="+", metavar="PATH")
    check.add_argument(
        "--format",
        choices=("text", "json", "sarif"),
        default="text",
        help="text (default), json (as --json) or sarif (SARIF 2.1.0, for code scanning)",
    )
    check.add_argument("--json", action="store_true", help="print a machine-readable report")
    check.add_argument(
        "--jsonl", action="store_true", help="print one JSON report per archive, as each is done"
    )
    check.add_argument(
        "--from-files",
        action="store_true",
        help="PATHs are files of a repository (as pre-commit passes them): validate the "
        "archives holding them, skip the others",
    )
    check.add_argument("--progress", action="store_true", help="show progress even off a terminal")
    check.add_argument("--strict", action="store_true", help="also flag what flambe tolerated")
    check.add_argument("-j", "--jobs", type=int, default=1, metavar="N", help="validate N at once")
    check.add_argument(
        "--allow-global",
        action="append",
        default=[],
        metavar="MODULE.NAME",
        help="accept payloads naming this global (repeatable)",
    )
    check.add_argument(
        "--rebuild",
        action="store_true",
        help="also rebuild each object (config and state); exit 1 listing missing classes",
    )
    check.add_argument(
        "--plugins",
        action="append",
        default=[],
        metavar="MODULE",
        help="with --rebuild: import MODULE first, which defines classes (repeatable)",
    )
    add_batch_arguments(check)
    check.set_defaults(run=_validate)

    show = commands.add_parser(
        "inspect",
        help="print an archive's nodes, classes, keys and tensor shapes",
        description="Print the node tree of an archive with classes, versions, state keys, "
        "tensor dtypes, shapes and sizes, without loading tensor data.",
    )
    show.add_argument("paths", nargs="+", metavar="PATH")
    show.add_argument("--json", action="store_true", help="print the archive's JSON description")
    show.add_argument(
        "--globals",
        action="store_true",
        help="list every global the allow-list refuses, per file (folders are searched), "
        "with the allow_globals=[...] and torch add_safe_globals([...]) lines that accept them",
    )
    show.add_argument(
        "--objects",
        action="store_true",
        help="print the object tree of the root config: tags and the classes found or missing",
    )
    show.add_argument(
        "--plugins",
        action="append",
        default=[],
        metavar="MODULE",
        help="with --objects: import MODULE first, which defines classes (repeatable)",
    )
    show.set_defaults(run=_inspect)

    move = commands.add_parser(
        "upgrade",
        help="upgrade archives to the latest revision (or --to 1.4 for flambe 0.4.18)",
        description="Upgrade one archive, or every archive found in a folder, step by step "
        "through the migration chain. Without DST the upgrade is in place and the original "
        "is kept as NAME.bak (NAME.bak.1, ... : an earlier backup is never overwritten). "
        "The new archive is validated before it replaces anything.",
    )
    move.add_argument("source", metavar="SRC")
    move.add_argument("destination", nargs="?", metavar="DST")
    move.add_argument("--to", default=LATEST, metavar="REVISION", help=f"default {LATEST}")
    move.add_argument("--dry-run", action="store_true", help="print the steps, write nothing")
    move.add_argument("--json", action="store_true", help="print a machine-readable report")
    move.add_argument(
        "--plugins",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE, which registers class state migrations (repeatable)",
    )
    move.add_argument("--progress", action="store_true", help="show progress even off a terminal")
    add_batch_arguments(move)
    move.set_defaults(run=_upgrade)

    out = commands.add_parser(
        "export",
        help="export an archive to safetensors, a flat torch file or a DCP folder",
        description="Load SRC through the allow-list and write its state for today's tools: "
        "safetensors (a folder with model.safetensors, sharded above --max-shard-size), torch "
        "(one flat state_dict file for torch.load(weights_only=True)) or dcp (a "
        "torch.distributed.checkpoint folder). The export is read back and compared with the "
        "archive before it appears at DST; an existing DST is refused.",
    )
    out.add_argument("source", metavar="SRC")
    out.add_argument("destination", metavar="DST")
    out.add_argument("--to", required=True, choices=("safetensors", "torch", "dcp"))
    out.add_argument(
        "--max-shard-size",
        default="5GB",
        metavar="SIZE",
        help="safetensors shards at most this large (5GB, 500MiB, bytes; default 5GB)",
    )
    out.add_argument(
        "--allow-global",
        action="append",
        default=[],
        metavar="MODULE.NAME",
        help="accept payloads naming this global (repeatable)",
    )
    out.add_argument(
        "--trusted", action="store_true", help="unpickle with dill as flambe did (trusted SRC only)"
    )
    out.add_argument("--overwrite", action="store_true", help="replace an existing DST")
    out.add_argument(
        "--non-atomic",
        action="store_true",
        help="allow a folder export (safetensors, dcp) to a URL: stores cannot rename, so a "
        "reader may see it half-uploaded",
    )
    out.add_argument("--json", action="store_true", help="print a machine-readable result")
    out.add_argument("--progress", action="store_true", help="show progress even off a terminal")
    add_batch_arguments(out)
    out.set_defaults(run=_export)
    return parser


def _validate(args: argparse.Namespace) -> int:
    if batch_requested(args):
        return run_batch_command(args, "validate")
    if args.jobs < 1:
        print("flambe-compat: -j needs a positive number", file=sys.stderr)
        return EXIT_USAGE
    if args.json and args.format not in ("text", "json"):
        print("flambe-compat: --json cannot be combined with --format sarif", file=sys.stderr)
        return EXIT_USAGE
    form = "json" if args.json else args.format
    if args.jsonl and form != "text":
        print("flambe-compat: --jsonl cannot be combined with --json or --format", file=sys.stderr)
        return EXIT_USAGE
    archives: list[Path | str] = []
    usage_error = False
    if args.from_files:
        archives += archive_roots(Path(given) for given in args.paths)
    else:
        for given in args.paths:
            try:
                archives += [given] if is_url(given) else find_archives(Path(given))
            except LoadError as error:
                print(f"flambe-compat: {error}", file=sys.stderr)
                usage_error = True
    if args.rebuild:
        try:
            _cli_objects().import_plugins(args.plugins)
        except Exception as error:  # a user's module: whatever it raises is a usage error here
            message = f"flambe-compat: cannot import a plugin: {type(error).__name__}: {error}"
            print(message, file=sys.stderr)
            return EXIT_USAGE
    check = partial(validate, strict=args.strict, allow_globals=tuple(args.allow_global))
    enabled, force = wanted(args)
    reports: list[Report] = []
    with bar("validate", enabled=enabled and len(archives) > 1, force=force) as meter:
        sizes = [_bytes_on_disk(archive) for archive in archives] if meter.enabled else []
        meter.update(0, sum(sizes))
        for index, report in enumerate(_reports(check, archives, args.jobs)):
            reports.append(report)
            if args.jsonl:
                print(json.dumps(report.as_json()), flush=True)
            if meter.enabled:
                meter.advance(sizes[index], shown(archives[min(index + 1, len(archives) - 1)]))
    rebuilds = {
        report.source: _cli_objects().rebuild_check(report.source)
        for report in reports
        if args.rebuild and report.valid
    }
    failed = {source for source, rebuilt in rebuilds.items() if not rebuilt.ok}
    usage_error = usage_error or any(map(_store_failed, reports))
    invalid = sum((not r.valid and not _store_failed(r)) or r.source in failed for r in reports)
    if form == "json":
        document = {
            "valid": invalid == 0 and not usage_error,
            "archives": len(reports),
            "invalid": invalid,
            "strict": args.strict,
            "reports": [
                {**r.as_json(), "rebuild": rebuilds[r.source].as_json()}
                if r.source in rebuilds
                else r.as_json()
                for r in reports
            ],
        }
        print(json.dumps(document, indent=1))
    elif form == "sarif":
        from .sarif import sarif_log

        print(json.dumps(sarif_log(reports), indent=1))
    elif not args.jsonl:
        for report in reports:
            print(report.render())
            if report.source in rebuilds:
                print(rebuilds[report.source].render())
        if len(reports) > 1:
            print(f"{len(reports)} archives, {invalid} invalid")
    if usage_error:
        return EXIT_USAGE
    return EXIT_INVALID if invalid else EXIT_VALID


def _cli_objects() -> ModuleType:
    """`flambe_compat.cli_objects`, imported only for `--rebuild` and `--objects`: it
    imports torch and the Component layer, which `validate` and `inspect` do not need."""
    return importlib.import_module(".cli_objects", __package__)


def _store_failed(report: Report) -> bool:
    """Whether the archive could not be read from its store (an I/O error, exit 2)."""
    return any(problem.rule == "store" for problem in report.problems)


def _reports(
    check: Callable[[Path | str], Report], archives: list[Path | str], jobs: int
) -> Iterator[Report]:
    """The reports on `archives` in order, each as soon as it (and those before) is done."""
    if jobs > 1 and len(archives) > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            yield from pool.map(check, archives)
    else:
        yield from map(check, archives)


def _bytes_on_disk(path: Path | str) -> int:
    """The bytes of an archive's files (a progress bar's measure of the work); 0 for a URL."""
    if isinstance(path, str):
        return 0
    if not path.is_dir():
        return path.stat().st_size if path.is_file() else 0
    return sum(
        (Path(folder) / name).stat().st_size
        for folder, _, files in os.walk(path)
        for name in files
        if (Path(folder) / name).is_file()
    )


def archive_roots(files: Iterable[Path]) -> list[Path]:
    """The archives holding `files` (paths as pre-commit passes them), each once, in order.

    A file in a folder archive stands for the archive's root: the outermost folder of the
    unbroken chain of node folders (each holds `protocol_version.txt` or `manifest.json`)
    above it. A `.tar.gz` or `.pkl` file outside any folder archive is an archive itself;
    other files are skipped.
    """
    roots: dict[Path, None] = {}
    for file in files:
        root = None
        for folder in file.parents:
            if not _is_archive_folder(folder):
                break
            root = folder
        if root is not None:
            roots[root] = None
        elif file.name.endswith(ARCHIVE_SUFFIXES) and file.is_file():
            roots[file] = None
    return list(roots)


def _upgrade(args: argparse.Namespace) -> int:
    from .class_migrations import class_migrations, import_plugins
    from .upgrade import upgrade  # imports torch: only the upgrade command needs it

    if batch_requested(args):
        return run_batch_command(args, "upgrade")
    source_root: Path | str = args.source if is_url(args.source) else Path(args.source)
    try:
        import_plugins(args.plugins)
    except Exception as error:  # a user's module: whatever it raises is a usage error here
        print(
            f"flambe-compat: cannot import a plugin: {type(error).__name__}: {error}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        sources: list[Path | str] = (
            [source_root]
            if isinstance(source_root, str)
            else [
                found
                for found in find_archives(source_root)
                if found == source_root or not BACKUP_NAME.search(found.name)
            ]
        )
        if not sources:
            raise LoadError(f"{source_root}: only backups (NAME.bak, NAME.bak.N) found")
    except LoadError as error:
        print(f"flambe-compat: {error}", file=sys.stderr)
        return EXIT_USAGE
    many = isinstance(source_root, Path) and (
        len(sources) > 1 or (source_root.is_dir() and sources != [source_root])
    )
    results: list[dict[str, Any]] = []
    lines: list[str] = []
    failed = unreachable = 0
    enabled, force = wanted(args)
    with bar("upgrade", enabled=enabled, force=force) as meter:
        sizes = [_bytes_on_disk(source) for source in sources] if meter.enabled else []
        meter.update(0, sum(sizes))
        for index, source in enumerate(sources, start=1):
            destination: Path | str | None = None
            if args.destination is not None:
                destination = (
                    args.destination if is_url(args.destination) else Path(args.destination)
                )
                if many and isinstance(source, Path) and isinstance(source_root, Path):
                    relative = source.relative_to(source_root)
                    destination = (
                        f"{destination.rstrip('/')}/{relative.as_posix()}"
                        if isinstance(destination, str)
                        else destination / relative
                    )
            label = f"[{index}/{len(sources)}] {shown(source)}"
            meter.advance(0, label)
            try:
                result = upgrade(
                    source,
                    destination,
                    to=args.to,
                    dry_run=args.dry_run,
                    class_migrations=class_migrations if args.plugins else None,
                    on_step=partial(_show_step, meter, label),
                )
            except (LoadError, OSError, ValueError) as error:
                failed += 1
                unreachable += isinstance(error, StoreError)
                results.append({"source": shown(source), "error": str(error)})
                lines.append(f"{shown(source)}: upgrade failed: {error}")
            else:
                results.append(result.as_json())
                lines.append(_render_upgrade(result))
            if meter.enabled:
                meter.advance(sizes[index - 1])
    if not args.json:
        for line, outcome in zip(lines, results, strict=True):
            print(line, file=sys.stderr if "error" in outcome else sys.stdout)
    if args.json:
        print(
            json.dumps(
                {"ok": failed == 0, "archives": len(sources), "failed": failed, "results": results},
                indent=1,
            )
        )
    if unreachable:
        return EXIT_USAGE
    return EXIT_INVALID if failed else EXIT_VALID


def _render_upgrade(result: UpgradeResult) -> str:
    steps = ", ".join(result.steps) or "nothing to do"
    if result.dry_run:
        revisions = f"{result.source_revision} -> {result.target_revision}"
        return f"{result.source}: {revisions}: {steps} (dry run)"
    where = f" -> {result.destination}" if result.destination != result.source else ""
    backup = f" (original kept as {result.backup})" if result.backup else ""
    classes = "".join(f"; {prefix or '.'} now {v}" for prefix, v in result.classes.items())
    return f"{result.source}{where}: {steps}{classes}{backup}"


def _show_step(meter: Bar, label: str, step: Migration) -> None:
    meter.advance(0, f"{label}: {step.source} -> {step.target}")


def find_archives(path: Path) -> list[Path]:
    """`path` itself if it is an archive (or any file), else the archives found below it."""
    if not path.exists() and not path.is_symlink():
        raise LoadError(f"{path}: no such file or directory")
    if not path.is_dir() or _is_archive_folder(path):
        return [path]
    found = sorted(_search(path))
    if not found:
        raise LoadError(f"{path}: no flambe archive found in this folder")
    return found


def _is_archive_folder(path: Path) -> bool:
    return (path / PROTOCOL_VERSION_FILE_NAME).is_file() or (path / MANIFEST_FILE_NAME).is_file()


def _search(folder: Path) -> Iterator[Path]:
    for current, subfolders, files in os.walk(folder):
        here = Path(current)
        archives = [name for name in subfolders if _is_archive_folder(here / name)]
        yield from (here / name for name in archives)
        subfolders[:] = [name for name in subfolders if name not in archives]
        yield from (here / name for name in files if name.endswith(ARCHIVE_SUFFIXES))


def _inspect(args: argparse.Namespace) -> int:
    if args.globals:
        return _inspect_globals(args)
    if (args.json or args.objects) and len(args.paths) > 1:
        option = "--json" if args.json else "--objects"
        print(f"flambe-compat: inspect {option} takes one PATH", file=sys.stderr)
        return EXIT_USAGE
    code = EXIT_VALID
    for given in args.paths:
        path: Path | str = given if is_url(given) else Path(given)
        report, description = _inspected(path)
        if description is None:
            print(report.render(), file=sys.stderr)
            missing = isinstance(path, Path) and not path.exists()
            code = max(code, EXIT_USAGE if missing or _store_failed(report) else EXIT_INVALID)
            continue
        if args.objects and report.valid:
            return _inspect_objects(path, args.plugins)
        if args.json:
            print(json.dumps(description.as_json(), indent=1))
        else:
            _print_table(*render_tree(report, description))
        if not report.valid:
            if not args.json:
                print(report.render(), file=sys.stderr)
            code = max(code, EXIT_INVALID)
    return code


def _inspected(path: Path | str) -> tuple[Report, Description | None]:
    """The report and description of the archive at `path` (a URL too); a container or
    store error becomes a report with its one problem, and no description."""
    try:
        with fetched(path) as local, opened(local) as archive:
            inspection = inspect(archive)
    except LoadError as error:
        rule = "store" if isinstance(error, StoreError) else "container"
        return Report(shown(path), problems=[Problem("", rule, after_source(error))]), None
    if is_url(path):
        inspection.report.source = shown(path)
    return inspection.report, inspection.description


def _inspect_objects(path: Path | str, plugins: list[str]) -> int:
    try:
        _cli_objects().import_plugins(plugins)
        text, _ = _cli_objects().render_objects(path)
    except LoadError as error:
        print(f"flambe-compat: {error}", file=sys.stderr)
        return EXIT_INVALID
    except Exception as error:  # a user's plugin: whatever it raises is a usage error
        message = f"flambe-compat: cannot import a plugin: {type(error).__name__}: {error}"
        print(message, file=sys.stderr)
        return EXIT_USAGE
    print(text)
    return EXIT_VALID


def render_tree(report: Report, description: Description) -> tuple[str, list[list[str]]]:
    """The node tree of a described archive: a title line, and table rows (the first
    holds the headings), one per node and per state key, then the tensor bytes in all."""
    title = (
        f"{report.source}: protocol {report.protocol} revision {report.revision} "
        f"({report.packing()})"
    )
    rows = [["NODE / KEY", "CLASS / TYPE", "SHAPE", "SIZE"]]
    total = 0
    for prefix, heading, keys in _nodes(description, report.nodes):
        depth = prefix.count(".") + 1 if prefix else 0
        indent = "  " * depth
        rows.append([f"{indent}{prefix or '.'}", heading, "", ""])
        for key, kind in keys:
            if isinstance(kind, TensorInfo):
                total += kind.nbytes
                cells = [kind.dtype, str(list(kind.shape)), _size(kind.nbytes)]
            else:
                cells = [kind, "", ""]
            rows.append([f"{indent}    {key}", *cells])
    rows.append(["tensor data", "", "", _size(total)])
    return title, rows


def _print_table(title: str, rows: list[list[str]]) -> None:
    """A title, then rows aligned in columns (rich; plain text off a terminal)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    headings, *body = rows
    table = Table(*headings, box=None, pad_edge=False, header_style="bold", show_edge=False)
    for column in table.columns:
        column.no_wrap = True
    table.columns[-1].justify = "right"
    for row in body:
        table.add_row(*map(Text, row))  # as text: a key such as "w[bold]" is no markup
    console = Console(highlight=False)
    if console.is_terminal:
        console.print(title, markup=False)
        console.print(table)
        return
    wide = Console(width=1 << 16, highlight=False, no_color=True)
    with wide.capture() as captured:
        wide.print(table)
    print(title)
    print("\n".join(line.rstrip() for line in captured.get().splitlines()))


def _inspect_globals(args: argparse.Namespace) -> int:
    """`inspect --globals`: every refused global of every archive under PATHs, per file."""
    archives: list[Path | str] = []
    code = EXIT_VALID
    for given in args.paths:
        try:
            archives += [given] if is_url(given) else find_archives(Path(given))
        except LoadError as error:
            print(f"flambe-compat: {error}", file=sys.stderr)
            code = EXIT_USAGE
    found: list[dict[str, Any]] = []
    for archive in archives:
        report, description = _inspected(archive)
        if description is None:
            print(report.render(), file=sys.stderr)
            code = max(code, EXIT_USAGE if _store_failed(report) else EXIT_INVALID)
            continue
        files = {
            path: list(payload.unsafe_globals)
            for path, payload in description.payloads()
            if payload.unsafe_globals
        }
        found.append({"source": shown(archive), "files": files})
    names = sorted({name for entry in found for names in entry["files"].values() for name in names})
    if names:
        code = max(code, EXIT_INVALID)
    lines = _allow_lines(names)
    if args.json:
        print(json.dumps({"archives": found, "globals": names, **lines}, indent=1))
        return code
    for entry in found:
        print(f"{entry['source']}: {_plural(len(entry['files']), 'file')} naming refused globals")
        for path, refused in entry["files"].items():
            print(f"  {path}  {', '.join(refused)}")
    if names:
        print("\nTo load with flambe_compat (only if you trust these names):")
        print(f"  load_state_from_file(path, {lines['allow_globals']})")
        print(f"For torch.load(weights_only=True):\n  {lines['add_safe_globals']}")
    else:
        print("no global outside the allow-list")
    return code


def _allow_lines(names: list[str]) -> dict[str, str]:
    """Ready-to-paste code accepting `names`: for our loads and for plain torch."""
    modules = sorted({name.rsplit(".", 1)[0] for name in names if "." in name})
    imports = f"import torch, {', '.join(modules)}; " if modules else "import torch; "
    return {
        "allow_globals": f"allow_globals={json.dumps(names)}",
        "add_safe_globals": f"{imports}torch.serialization.add_safe_globals([{', '.join(names)}])",
    }


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' * (count != 1)}"


def _export(args: argparse.Namespace) -> int:
    from .export import ExportError, export, parse_size

    if batch_requested(args):
        return run_batch_command(args, "export")
    source: Path | str = args.source if is_url(args.source) else Path(args.source)
    if isinstance(source, Path) and not source.exists() and not source.is_symlink():
        print(f"flambe-compat: {source}: no such file or directory", file=sys.stderr)
        return EXIT_USAGE
    try:
        max_shard_size = parse_size(args.max_shard_size)
    except ValueError as error:
        print(f"flambe-compat: --max-shard-size: {error}", file=sys.stderr)
        return EXIT_USAGE
    enabled, force = wanted(args)
    try:
        with bar("export", enabled=enabled, force=force) as meter:
            result = export(
                source,
                args.destination,
                to=args.to,
                max_shard_size=max_shard_size,
                allow_globals=args.allow_global,
                trusted=args.trusted,
                overwrite=args.overwrite,
                atomic=not args.non_atomic,
                progress=lambda phase, done, total: meter.update(done, total, phase),
            )
    except (StoreError, OSError) as error:
        print(f"flambe-compat: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (LoadError, ExportError) as error:
        print(f"flambe-compat: {shown(source)}: cannot export: {error}", file=sys.stderr)
        return EXIT_INVALID
    except ValueError as error:  # a remote target that exists, or a folder not atomic there
        print(f"flambe-compat: {error}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(result.as_json(), indent=1))
    else:
        shared = (
            f", {_plural(len(result.shared), 'shared name')} stored once" if result.shared else ""
        )
        print(
            f"{result.source} -> {result.destination}: {result.format}, "
            f"{_plural(len(result.files), 'file')}, {_plural(result.tensors, 'tensor')} "
            f"({_size(result.tensor_bytes)}){shared}, verified"
        )
    return EXIT_VALID


_Keys = list[tuple[str, "TensorInfo | str"]]


def _keys(payload: PayloadSummary | None, prefix: str = "", owned: set[str] | None = None) -> _Keys:
    """A payload's keys (those in `owned`, less `prefix`) with their tensor or type name."""
    if payload is None:
        return []
    return [
        (key.removeprefix(prefix), payload.tensors.get(key) or payload.value_types.get(key, "?"))
        for key in payload.keys or []
        if owned is None or key in owned
    ]


def _nodes(description: Description, prefixes: list[str]) -> Iterator[tuple[str, str, _Keys]]:
    if description.pickle is None:
        known = set(prefixes)
        by_folder = {"/".join(component_folders(p, known)): p for p in prefixes}
        for node in description.nodes:
            prefix = by_folder.get(node.relative, node.relative.replace("/", "."))
            heading = (node.version_file or "?").strip().replace(":", " ")
            yield prefix, heading, _keys(node.state)
        return
    payload = description.pickle
    metadata = payload.metadata if isinstance(payload.metadata, dict) else {}
    ordered = sorted(prefixes, key=len, reverse=True)
    owners = {
        key: next((p for p in ordered if p and key.startswith(p + ".")), "")
        for key in payload.keys or []
    }
    for prefix in prefixes:
        entry = metadata.get(prefix) or {}
        heading = f"{entry.get(FLAMBE_CLASS_KEY, '?')} {entry.get(VERSION_KEY, '?')}"
        owned = {key for key, owner in owners.items() if owner == prefix}
        yield prefix, heading, _keys(payload, prefix + "." if prefix else "", owned)


def _size(nbytes: int) -> str:
    size = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


if __name__ == "__main__":
    raise SystemExit(main())
