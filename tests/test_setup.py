"""The README's two commands are what CI runs, and every way of starting the CLI lists every command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("file", "export", "doctor", "live", "train", "eval", "report")


def readme_commands() -> list[str]:
    """The first two ```bash blocks of the README's set-up section: set-up, then tests."""
    section = ROOT.joinpath("README.md").read_text().split("## Set-up and tests", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)
    assert len(blocks) >= 2, "the README's set-up section needs a set-up block and a test block"
    return [blocks[0].strip(), blocks[1].strip()]


def test_ci_runs_the_readme_commands_byte_for_byte():
    setup, tests = readme_commands()
    assert "\n" not in setup and "\n" not in tests
    assert "-m venv .venv" in setup and ".venv/bin/pip install" in setup, "the set-up installs into a fresh venv"
    assert tests.startswith(".venv/bin/python -m pytest"), "the tests run with the venv's python, no `activate`"
    lines = ROOT.joinpath(".ci", "run").read_text().splitlines()
    assert setup in lines and tests in lines
    assert lines.index(setup) < lines.index(tests)
    assert ".venv/" in ROOT.joinpath(".gitignore").read_text().splitlines()


@pytest.mark.parametrize(
    "argv",
    [["merstream"], [sys.executable, "-m", "merstream"], [sys.executable, "-m", "merstream.cli"]],
    ids=["script", "python -m merstream", "python -m merstream.cli"],
)
def test_every_entry_point_lists_every_command(argv):
    if argv == ["merstream"]:
        argv = [str(Path(sys.executable).with_name("merstream"))]
    p = subprocess.run([*argv, "--help"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    listed = re.findall(r"^\s{2}(\w+)\s", p.stdout.split("Commands:", 1)[1], flags=re.M)
    assert sorted(listed) == sorted(COMMANDS), p.stdout


def test_the_readme_python_example_runs_and_prints_windows(tmp_path):
    """The README's library example, run as written (only the data path made absolute)."""
    from conftest import DATA

    readme = ROOT.joinpath("README.md").read_text()
    code = re.search(r"### Python\n+```python\n(.*?)\n```", readme, flags=re.S).group(1)
    code = code.replace("../shared/data", str(DATA))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 12 and all(re.match(r"\s*\d+\.\d-\s*\d+\.\d s  \w+\s+0\.\d\d  [LVA]+", x) for x in lines), p.stdout
    assert "jacket" in p.stdout and (tmp_path / "timeline" / "talk_6emotions.jsonl").exists()
