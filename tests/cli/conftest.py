"""Fixtures of the CLI tests."""

import pytest
from click.testing import CliRunner

from genpromp_annotate.cli import cli


@pytest.fixture()
def run(db_url, monkeypatch, tmp_path):
    """Invoke the CLI on `db_url` (SQLite and PostgreSQL) with a private GENPROMP_HOME; assert the exit code."""
    monkeypatch.setenv("GENPROMP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def invoke(*args: str, code: int = 0):
        result = CliRunner().invoke(cli, ["--db", db_url, *args])
        assert result.exit_code == code, result.output + repr(result.exception)
        return result.output

    return invoke
