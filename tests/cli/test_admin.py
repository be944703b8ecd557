"""`db upgrade` and `demo`."""

import csv

import pytest
from click.testing import CliRunner
from PIL import Image
from sqlalchemy import text

from genpromp_annotate.cli import cli
from genpromp_annotate.store.database import create_store_engine
from genpromp_annotate.store.schema import head_revision


def test_db_upgrade_creates_then_reports_up_to_date(db_url, monkeypatch, tmp_path):
    monkeypatch.setenv("GENPROMP_HOME", str(tmp_path / "home"))
    first = CliRunner().invoke(cli, ["--db", db_url, "db", "upgrade"])
    assert first.exit_code == 0, first.output
    assert f"upgraded from revision (empty) to {head_revision()}" in first.output
    second = CliRunner().invoke(cli, ["--db", db_url, "db", "upgrade"])
    assert f"already at schema revision {head_revision()}" in second.output


def test_commands_refuse_a_database_of_unknown_revision(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert CliRunner().invoke(cli, ["--db", url, "db", "upgrade"]).exit_code == 0
    engine = create_store_engine(url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'ffff'"))
    engine.dispose()
    result = CliRunner().invoke(cli, ["--db", url, "status", "p"])
    assert result.exit_code == 1 and "schema revision ffff" in result.output and "newer version" in result.output


def test_default_database_lives_in_genpromp_home(monkeypatch, tmp_path):
    monkeypatch.setenv("GENPROMP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GENPROMP_DATABASE_URL", raising=False)
    result = CliRunner().invoke(cli, ["db", "upgrade"])
    assert result.exit_code == 0 and (tmp_path / "home" / "genpromp.db").is_file()


@pytest.mark.slow
def test_demo_runs_the_whole_flow(monkeypatch, tmp_path):
    monkeypatch.setenv("GENPROMP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("GENPROMP_DATABASE_URL", raising=False)
    out = tmp_path / "demo"
    result = CliRunner().invoke(cli, ["demo", "--out", str(out), "--images-per-label", "2"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert (tmp_path / "home" / "models" / "toy-sd" / "model_index.json").is_file()
    rows = list(csv.DictReader((out / "boxes.csv").open()))
    assert sorted(r["label"] for r in rows) == sorted(["circle", "square", "triangle", "star", "cross"] * 2)
    assert all(r["model_version"].startswith("gp-") and float(r["x2"]) > float(r["x1"]) for r in rows)
    overlays = sorted((out / "overlays").glob("*.png"))
    assert len(overlays) == 10 and {Image.open(p).size for p in overlays} == {(256, 256), (320, 240)}
    for line in ("boxes:", "overlays:", "database:", str(out / "boxes.csv"), "GT-known:"):
        assert line in result.output
    # the demo's own score: the toy model boxes most of its images on their object
    share = float(result.output.split("GT-known: ")[1].split(" %")[0])
    assert share >= 70.0, result.output
    again = CliRunner().invoke(cli, ["demo", "--out", str(out), "--images-per-label", "2"])  # re-runnable
    assert again.exit_code == 0, again.output
