"""The `flambe-compat` command line: `validate`, `inspect` and `upgrade`.

Paths may be URLs (`s3://...`, see `flambe_compat.store`). Exit codes: 0 when every
archive is valid, 1 when any is invalid, 2 for usage or I/O errors (a path that does not
exist, a folder with no archive in it, a store that cannot be read).

>>> main(["validate", "fixtures/flambe-corpus/0.4.18-zip/counter-dir"])
fixtures/flambe-corpus/0.4.18-zip/counter-dir: valid (protocol 1 revision 1.4, ...)
0
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from . import __version__
from .bulk_cli import add_batch_arguments, batch_requested, run_batch_command
from .class_migrations import class_migrations, import_plugins
from .errors import LoadError
from .layout import MANIFEST_FILE_NAME, PROTOCOL_VERSION_FILE_NAME
from .migrate import LATEST, Migration
from .peek import TensorInfo
from .store import StoreError, is_url, shown
from .tree import component_folders
from .upgrade import BACKUP_NAME, UpgradeResult, upgrade
from .validate import Report, validate

EXIT_VALID, EXIT_INVALID, EXIT_USAGE = 0, 1, 2
ARCHIVE_SUFFIXES = (".tar.gz", ".pkl")


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
    check.add_argument("--json", action="store_true", help="print a machine-readable report")
    check.add_argument("--strict", action="store_true", help="also flag what flambe tolerated")
    check.add_argument("-j", "--jobs", type=int, default=1, metavar="N", help="validate N at once")
    check.add_argument(
        "--allow-global",
        action="append",
        default=[],
        metavar="MODULE.NAME",
        help="accept payloads naming this global (repeatable)",
    )
    add_batch_arguments(check)
    check.set_defaults(run=_validate)

    show = commands.add_parser(
        "inspect",
        help="print an archive's nodes, classes, keys and tensor shapes",
        description="Print the node tree of an archive with classes, versions, state keys, "
        "tensor dtypes, shapes and sizes, without loading tensor data.",
    )
    show.add_argument("path", metavar="PATH")
    show.add_argument("--json", action="store_true", help="print the archive's JSON description")
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
    return parser


def _validate(args: argparse.Namespace) -> int:
    if batch_requested(args):
        return run_batch_command(args, "validate")
    if args.jobs < 1:
        print("flambe-compat: -j needs a positive number", file=sys.stderr)
        return EXIT_USAGE
    archives: list[Path | str] = []
    usage_error = False
    for given in args.paths:
        try:
            archives += [given] if is_url(given) else find_archives(Path(given))
        except LoadError as error:
            print(f"flambe-compat: {error}", file=sys.stderr)
            usage_error = True
    check = partial(validate, strict=args.strict, allow_globals=tuple(args.allow_global))
    if args.jobs > 1 and len(archives) > 1:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            reports = list(pool.map(check, archives))
    else:
        reports = [check(archive) for archive in archives]
    usage_error = usage_error or any(map(_store_failed, reports))
    invalid = sum(not report.valid and not _store_failed(report) for report in reports)
    if args.json:
        document = {
            "valid": invalid == 0 and not usage_error,
            "archives": len(reports),
            "invalid": invalid,
            "strict": args.strict,
            "reports": [report.as_json() for report in reports],
        }
        print(json.dumps(document, indent=1))
    else:
        for report in reports:
            print(report.render())
        if len(reports) > 1:
            print(f"{len(reports)} archives, {invalid} invalid")
    if usage_error:
        return EXIT_USAGE
    return EXIT_INVALID if invalid else EXIT_VALID


def _store_failed(report: Report) -> bool:
    """Whether the archive could not be read from its store (an I/O error, exit 2)."""
    return any(problem.rule == "store" for problem in report.problems)


def _upgrade(args: argparse.Namespace) -> int:
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
    progress = _Progress(len(sources), enabled=args.progress or sys.stderr.isatty())
    results: list[dict[str, Any]] = []
    failed = unreachable = 0
    for index, source in enumerate(sources, start=1):
        destination: Path | str | None = None
        if args.destination is not None:
            destination = args.destination if is_url(args.destination) else Path(args.destination)
            if many and isinstance(source, Path) and isinstance(source_root, Path):
                relative = source.relative_to(source_root)
                destination = (
                    f"{destination.rstrip('/')}/{relative.as_posix()}"
                    if isinstance(destination, str)
                    else destination / relative
                )
        progress.show(index, source)
        try:
            result = upgrade(
                source,
                destination,
                to=args.to,
                dry_run=args.dry_run,
                class_migrations=class_migrations if args.plugins else None,
                on_step=partial(progress.step, source),
            )
        except (LoadError, OSError, ValueError) as error:
            failed += 1
            unreachable += isinstance(error, StoreError)
            results.append({"source": shown(source), "error": str(error)})
            if not args.json:
                print(f"{shown(source)}: upgrade failed: {error}", file=sys.stderr)
            continue
        results.append(result.as_json())
        if not args.json:
            print(_render_upgrade(result))
    progress.done()
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


class _Progress:
    """A one-line progress display on stderr for long upgrades."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled

    def show(self, index: int, source: Path | str) -> None:
        if self.enabled:
            print(f"\r[{index}/{self.total}] {shown(source)}", end="", file=sys.stderr, flush=True)

    def step(self, source: Path | str, step: Migration) -> None:
        if self.enabled:
            line = f"\r\x1b[K{shown(source)}: {step.source} -> {step.target}"
            print(line, end="", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.enabled:
            print("\r\x1b[K", end="", file=sys.stderr, flush=True)


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
    path: Path | str = args.path if is_url(args.path) else Path(args.path)
    report = validate(path)
    if report.document is None:
        print(report.render(), file=sys.stderr)
        missing = isinstance(path, Path) and not path.exists()
        return EXIT_USAGE if missing or _store_failed(report) else EXIT_INVALID
    if args.json:
        print(json.dumps(report.document, indent=1))
    else:
        print(render_tree(report))
        if not report.valid:
            print(report.render(), file=sys.stderr)
    return EXIT_VALID if report.valid else EXIT_INVALID


def render_tree(report: Report) -> str:
    """The node tree of a described archive, one line per node and per state key."""
    document = report.document or {}
    lines = [
        f"{report.source}: protocol {report.protocol} revision {report.revision} "
        f"({report.layout} in {report.container})"
    ]
    total = 0
    for prefix, heading, payload in _nodes(document, report.nodes):
        depth = prefix.count(".") + 1 if prefix else 0
        indent = "  " * depth
        lines.append(f"{indent}{prefix or '.'}  {heading}")
        for key in payload.get("keys") or []:
            tensor = (payload.get("tensors") or {}).get(key)
            if tensor:
                total += _nbytes(tensor)
                kind = f"{tensor['dtype']} {tensor['shape']}  {_size(_nbytes(tensor))}"
            else:
                kind = (payload.get("value_types") or {}).get(key, "?")
            lines.append(f"{indent}    {key}  {kind}")
    lines.append(f"tensor data: {_size(total)}")
    return "\n".join(lines)


def _nodes(document: dict[str, Any], prefixes: list[str]) -> Iterator[tuple[str, str, Any]]:
    if document.get("layout") == "folder":
        for node, prefix in zip(document["nodes"], _prefix_order(document, prefixes), strict=True):
            yield prefix, _heading(node.get("version_file")), node.get("state") or {}
        return
    state = document.get("state") or {}
    metadata = state.get("metadata") or {}
    owners = _owners(state.get("keys") or [], prefixes)
    for prefix in prefixes:
        node = metadata.get(prefix) or {}
        heading = f"{node.get('_flambe_class', '?')} {node.get('_flambe_version', '?')}"
        dotted = prefix + "." if prefix else ""
        keys = [key for key in state.get("keys") or [] if owners[key] == prefix]
        tensors = state.get("tensors") or {}
        types = state.get("value_types") or {}
        yield (
            prefix,
            heading,
            {
                "keys": [key.removeprefix(dotted) for key in keys],
                "tensors": {k.removeprefix(dotted): tensors[k] for k in keys if k in tensors},
                "value_types": {k.removeprefix(dotted): types[k] for k in keys if k in types},
            },
        )


def _prefix_order(document: dict[str, Any], prefixes: list[str]) -> list[str]:
    by_folder = {"/".join(component_folders(p, prefixes)): p for p in prefixes}
    return [
        by_folder.get(node["folder"], node["folder"].replace("/", "."))
        for node in document["nodes"]
    ]


def _owners(keys: list[str], prefixes: list[str]) -> dict[str, str]:
    ordered = sorted(prefixes, key=len, reverse=True)
    return {key: next((p for p in ordered if p and key.startswith(p + ".")), "") for key in keys}


def _heading(version_file: str | None) -> str:
    return (version_file or "?").strip().replace(":", " ")


def _nbytes(tensor: dict[str, Any]) -> int:
    return TensorInfo(tensor["dtype"], tuple(tensor["shape"])).nbytes


def _size(nbytes: int) -> str:
    size = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


if __name__ == "__main__":
    raise SystemExit(main())
