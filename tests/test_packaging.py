"""What a newcomer meets first: the Quickstart's order, one PyTorch floor, a complete sdist."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from tests.conftest import ROOT

CPU_INDEX = "--index-url https://download.pytorch.org/whl/cpu"


def quickstart() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]


def test_one_torch_floor_in_pyproject_readme_and_ci() -> None:
    (floor,) = re.findall(r'^    "torch>=([\d.]*\d)",', (ROOT / "pyproject.toml").read_text(), re.M)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    readme = re.findall(r"PyTorch >= ([\d.]*\d)", readme)
    ci = re.findall(r"torch >= ([\d.]*\d)", (ROOT / ".ci" / "run").read_text())
    assert readme and ci
    assert set(readme) == set(ci) == {floor}
    assert f"PyTorch >= {floor}" in quickstart()


def test_quickstart_installs_the_cpu_build_before_charlm() -> None:
    """Read top to bottom, the commands put the CPU build of torch in place before `pip install
    -e .`, which would otherwise pull PyPI's CUDA build (several GB) onto a CPU-only machine."""
    block = quickstart().split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line for line in block.splitlines() if line and not line.startswith("#")]
    assert commands[0] == f"pip install torch {CPU_INDEX}"
    assert commands[1].startswith("pip install -e . ")
    assert 'pip install -e ".[dev]"' in commands[2] and "python -m pytest" in commands[2]
    comments = block.split(commands[0])[0]
    assert "without an NVIDIA GPU" in comments and "GPU machine skip it" in comments
    assert "pip install charlm[" not in (ROOT / "README.md").read_text(encoding="utf-8")


def _project_files(folder: str) -> set[str]:
    skip = {"__pycache__", ".pytest_cache"}
    found = set()
    for path in (ROOT / folder).rglob("*"):
        if path.is_file() and not skip & set(path.parts) and not path.name.startswith("results"):
            found.add(path.relative_to(ROOT).as_posix())
    return found


def test_the_sdist_is_complete(tmp_path: Path) -> None:
    """The sdist ships the tests with their conftest.py and the benchmarks they run: its tests
    are collected from the unpacked sdist."""
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns(".git", ".venv", "*.egg-info", "__pycache__", "runs", "build")
    shutil.copytree(ROOT, src, ignore=ignore)
    build = (
        "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", build, str(tmp_path / "dist")],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    archive = tmp_path / "dist" / proc.stdout.split()[-1]
    with tarfile.open(archive) as tar:
        top = tar.getnames()[0].split("/")[0]
        shipped = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python >= 3.10.12
        tar.extractall(tmp_path / "unpacked", **safe)
    wanted = _project_files("tests") | _project_files("benchmarks") | {".ci/run", "README.md"}
    assert "tests/conftest.py" in wanted and "benchmarks/bench.py" in wanted
    assert wanted - shipped == set()
    unpacked = tmp_path / "unpacked" / top
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    collect = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=unpacked,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert collect.returncode == 0, collect.stdout + collect.stderr
    collected = [line for line in collect.stdout.splitlines() if "::" in line]
    assert any(line.startswith("tests/test_bench.py::") for line in collected)
    assert all(line.startswith("tests/") for line in collected)
