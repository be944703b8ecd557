"""The code stays lint-clean (ruff), type-checked (mypy over the package) and free of dead code (vulture)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def test_ruff_is_clean():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "genpromp_annotate", "backend", "tests", "bench"],
                          cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_mypy_is_clean():
    done = subprocess.run([sys.executable, "-m", "mypy", "genpromp_annotate"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_dead_code():
    """vulture over the code and its tests; framework-called names are listed in tests/vulture_allowlist.py."""
    done = subprocess.run([sys.executable, "-m", "vulture", "--min-confidence", "60", "genpromp_annotate", "backend",
                           "bench", "tests"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
