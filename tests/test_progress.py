"""Progress bars: drawn on a terminal (a pseudo-terminal here), never off one unless
`--progress` forces them, never with machine-readable output; `NO_COLOR` drops colours.

Each command runs as a process whose stderr is a pty (stdout stays a pipe, as in
`flambe-compat validate ... > report.json`).
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.corpus import CORPUS

REPO = Path(__file__).resolve().parent.parent
ARCHIVES = [CORPUS / "0.4.18-zip" / "wrapper-dir", CORPUS / "0.4.18-zip" / "mlp-tgz.tar.gz"]
COLOUR = re.compile(r"\x1b\[(?:\d+;)*(?:3[0-7]|9[0-7]|38;[25];[\d;]+)m")
"""A foreground colour escape (a plain, a bright or a 256/true colour)."""


def run(*args: str | Path, tty: bool, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run the command line; stderr on a 160-column pty when `tty`; (code, stdout, stderr)."""
    environment = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    environment.update({"TERM": "xterm-256color", "COLUMNS": "160"}, **(env or {}))
    command = [sys.executable, "-m", "flambe_compat", *map(str, args)]
    if not tty:
        done = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True)
        return done.returncode, done.stdout, done.stderr
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the last holder of the follower side closed it
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        process = subprocess.run(
            command, cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=follower, timeout=300
        )
    finally:
        os.close(follower)
        reader.join(timeout=60)
        os.close(leader)
    return process.returncode, process.stdout.decode(), b"".join(chunks).decode(errors="replace")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str, str]]:
    out = tmp_path_factory.mktemp("progress")
    jobs = {
        "tty": (("validate", *ARCHIVES), True, None),
        "no-color": (("validate", *ARCHIVES), True, {"NO_COLOR": "1"}),
        "pipe": (("validate", *ARCHIVES), False, None),
        "forced": (("validate", "--progress", *ARCHIVES), False, None),
        "json": (("validate", "--json", *ARCHIVES), True, None),
        "sarif": (("validate", "--format", "sarif", *ARCHIVES), True, None),
        "jsonl": (("validate", "--jsonl", *ARCHIVES), True, None),
        "export": (("export", ARCHIVES[0], out / "exported", "--to", "safetensors"), True, None),
        "inspect": (("inspect", ARCHIVES[0]), True, None),
    }
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {
            name: pool.submit(run, *args, tty=tty, env=env)
            for name, (args, tty, env) in jobs.items()
        }
    return {name: future.result() for name, future in futures.items()}


def test_a_terminal_shows_bytes_rate_and_eta(runs: dict[str, tuple[int, str, str]]) -> None:
    code, out, err = runs["tty"]
    assert code == 0
    assert "validate" in err and re.search(r"\d+(\.\d)?/\d+(\.\d)? (bytes|kB)", err)
    assert re.search(r"(\?|\d+(\.\d)? (bytes|kB|MB|GB))/s", err) and "eta" in err
    assert COLOUR.search(err)
    assert out.splitlines()[-1] == "2 archives, 0 invalid"  # the results stay on stdout


def test_no_color_drops_colours(runs: dict[str, tuple[int, str, str]]) -> None:
    code, _, err = runs["no-color"]
    assert code == 0 and "eta" in err
    assert not COLOUR.search(err)


def test_off_a_terminal_nothing_unless_forced(runs: dict[str, tuple[int, str, str]]) -> None:
    assert runs["pipe"][0] == 0 and runs["pipe"][2] == ""
    code, _, err = runs["forced"]
    assert code == 0 and "eta" in err and "validate" in err


@pytest.mark.parametrize("name", ["json", "sarif", "jsonl"])
def test_machine_output_stays_silent(runs: dict[str, tuple[int, str, str]], name: str) -> None:
    code, out, err = runs[name]
    assert code == 0 and out
    assert err == ""


def test_export_shows_its_phases(runs: dict[str, tuple[int, str, str]]) -> None:
    code, out, err = runs["export"]
    assert code == 0 and out.endswith("verified\n")
    assert "export write" in err or "export verify" in err


def test_inspect_on_a_terminal_is_a_table(runs: dict[str, tuple[int, str, str]]) -> None:
    code, out, _ = runs["inspect"]
    assert code == 0
    plain = [line.rstrip() for line in out.splitlines()]
    assert "NODE / KEY            CLASS / TYPE   SHAPE   SIZE" in plain
