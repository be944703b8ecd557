"""Packaging: every package is shipped, and a wheel installs no top-level `backend` or `migrations`."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _setuptools_table() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_folder_is_listed_under_its_installed_name():
    table = _setuptools_table()
    folder_of = {name: Path(folder) for name, folder in table["package-dir"].items()}
    listed = set(table["packages"])
    for top in ("genpromp_annotate", "backend", "migrations"):
        for init in (ROOT / top).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT).parts
            name = next((n for n, f in folder_of.items() if f.parts == parts[:1]), parts[0])
            dotted = ".".join((name, *parts[1:]))
            assert dotted in listed, f"{init.parent} is a package but pyproject.toml does not ship it as {dotted}"
    assert not {"backend", "migrations"} & {name.split(".")[0] for name in listed}


@pytest.mark.slow
def test_wheel_installs_under_the_project_name_and_upgrades_a_database(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels), str(ROOT)], check=True, cwd=tmp_path)
    wheel = next(wheels.glob("genpromp_annotate-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    assert (site / "genpromp_annotate_backend" / "app.py").is_file()
    assert (site / "genpromp_annotate_migrations" / "env.py").is_file()
    assert list((site / "genpromp_annotate_migrations" / "versions").glob("*.py"))
    assert not (site / "backend").exists() and not (site / "migrations").exists()
    # The dependencies come from this environment, appended after the wheel's own site-packages (a .pth
    # path line does not run this environment's editable-install hook, so the wheel's code is what runs).
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {**os.environ, "GENPROMP_HOME": str(tmp_path / "home")}
    env.pop("GENPROMP_DATABASE_URL", None)
    db = tmp_path / "wheel.db"
    probe = ("import genpromp_annotate, genpromp_annotate.store.schema as s; "
             "print(genpromp_annotate.__file__); print(s.migrations_dir())")
    where = subprocess.run([str(python), "-c", probe],
                           check=True, capture_output=True, text=True, cwd=tmp_path, env=env).stdout.split()
    assert all(Path(p).is_relative_to(site) for p in where), where
    done = subprocess.run([str(python), "-m", "genpromp_annotate", "--db", f"sqlite:///{db}", "db", "upgrade"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, check=False)
    assert done.returncode == 0, done.stderr
    import sqlite3

    with sqlite3.connect(db) as connection:
        tables = {row[0] for row in connection.execute("select name from sqlite_master where type='table'")}
    assert {"projects", "images", "predictions", "alembic_version"} <= tables
