"""One-way dependencies: the import contracts in pyproject.toml hold, and they do catch a violation."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports(cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = None
    if pythonpath is not None:
        import os

        env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    command = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", command, "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                          cwd=cwd, env=env, capture_output=True, text=True, check=False)


def test_the_import_contracts_hold():
    done = _lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 kept, 0 broken" in done.stdout


def test_a_core_module_importing_the_backend_breaks_the_contract(tmp_path):
    """A copy of the packages where one engine module imports the backend: the check must fail."""
    ignore = shutil.ignore_patterns("__pycache__", "*.safetensors")
    shutil.copytree(ROOT / "genpromp_annotate", tmp_path / "genpromp_annotate", ignore=ignore)
    shutil.copytree(ROOT / "backend", tmp_path / "genpromp_annotate_backend", ignore=ignore)
    boxes = tmp_path / "genpromp_annotate" / "engine" / "boxes.py"
    boxes.write_text(boxes.read_text() + "\nimport genpromp_annotate_backend.app  # noqa\n")
    done = _lint_imports(tmp_path, pythonpath=tmp_path)
    assert done.returncode != 0
    assert "the core never imports the Label Studio ML backend" in done.stdout
    assert "genpromp_annotate.engine.boxes -> genpromp_annotate_backend.app" in done.stdout


def test_a_native_module_importing_diffusers_breaks_the_contract(tmp_path):
    """The native runtime exists to start without diffusers: one import of it must fail the check."""
    ignore = shutil.ignore_patterns("__pycache__", "*.safetensors")
    shutil.copytree(ROOT / "genpromp_annotate", tmp_path / "genpromp_annotate", ignore=ignore)
    shutil.copytree(ROOT / "backend", tmp_path / "genpromp_annotate_backend", ignore=ignore)
    unet = tmp_path / "genpromp_annotate" / "engine" / "native" / "unet.py"
    unet.write_text(unet.read_text() + "\nimport diffusers  # noqa\n")
    done = _lint_imports(tmp_path, pythonpath=tmp_path)
    assert done.returncode != 0
    assert "the native inference modules import neither diffusers nor transformers" in done.stdout
    assert "genpromp_annotate.engine.native.unet -> diffusers" in done.stdout
