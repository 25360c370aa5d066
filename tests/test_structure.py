"""Gates that catch breakage the behaviour tests would not: the import layers, every benchmark
script still starting, and every flag the README and docs/ show still existing."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "facegan"
UPPER = ("metrics", "study", "cli")  # what the lower modules may never import


def _imports(path: Path) -> set[str]:
    """The facegan modules `path` imports anywhere in it (function-level imports too), as dotted names."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            target = f"{base}.{node.module}" if node.level and node.module else base or node.module
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name and name.startswith("facegan")}


def _layer(name: str) -> str:
    return name.split(".")[1] if name.count(".") else ""


def test_lower_modules_never_import_metrics_study_or_cli():
    above = {"train", "bench", "__main__", *UPPER}  # the loop, the benchmark helpers and the top floors
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if _layer(name) in above:
            continue
        wrong += [f"{name} imports {target}" for target in _imports(path) if _layer(target) in UPPER]
    assert wrong == []
    for path in (PACKAGE / "metrics").rglob("*.py"):  # metrics sit below the study and the CLI
        assert not [t for t in _imports(path) if _layer(t) in ("study", "cli", "train")], path
    for path in (PACKAGE / "study").rglob("*.py"):
        assert not [t for t in _imports(path) if _layer(t) == "cli"], path


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "benchmarks").glob("*.py")))
def test_every_benchmark_script_starts(script):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "usage" in done.stdout.lower(), done.stderr[-2000:]


def _flags_by_command() -> dict[str, set[str]]:
    """`facegan` subcommand path ('train', 'data prepare', 'study run') -> the flags its parser accepts."""
    from facegan.cli import build_parser

    found = {}

    def walk(parser, path):
        found[path] = {flag for action in parser._actions for flag in action.option_strings}
        for action in parser._actions:
            if getattr(action, "choices", None) and isinstance(action.choices, dict):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}".strip())
    walk(build_parser(), "")
    return found


def test_every_flag_the_readme_and_docs_show_exists():
    flags = _flags_by_command()
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    missing = []
    for page in pages:
        text = page.read_text()
        # each command line (in code blocks and inline code) that runs facegan; continuation lines joined
        for line in re.findall(r"facegan\s+[a-z][^\n`|]*", text.replace("\\\n", " ")):
            words = line.split()[1:]
            command = next((" ".join(words[:n]) for n in (2, 1) if " ".join(words[:n]) in flags), None)
            if command is None:
                continue
            for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", line):
                if flag not in flags[command] and flag not in flags[""]:
                    missing.append(f"{page.name}: facegan {command} {flag}")
    assert missing == []


def test_the_gpu_check_script_runs_its_cpu_parts(tmp_path):
    """benchmarks/gpu_check.sh must not rot before a GPU is lent: --help, then its dry run (the torchrun, resume,
    generate and export steps, tiny and on the CPU) must finish with every step ok."""
    script = ROOT / "benchmarks" / "gpu_check.sh"
    env = dict(os.environ, PYTHON=sys.executable, TMPDIR=str(tmp_path), OMP_NUM_THREADS="1")
    shown = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "--dry-run" in shown.stdout
    done = subprocess.run(["bash", str(script), "--dry-run"], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = done.stdout.split("status", 1)[1]
    for step in ("GPU options parse", "speed eager", "torchrun 1 process (gloo)", "resume", "generate",
                 "export onnx"):
        assert re.search(rf"{re.escape(step)}\s+ok\b", table), table
    assert "FAILED" not in done.stdout
