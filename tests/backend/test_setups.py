"""The /setup registry, shared between worker processes through the state folder."""

from __future__ import annotations

import json

from genpromp_annotate_backend.setups import SetupRegistry, ls_project_id


def test_project_ids():
    assert ls_project_id("12.1700000000") == "12" and ls_project_id(12) == "12" and ls_project_id(None) is None


def test_another_process_reads_what_setup_wrote_without_the_token(tmp_path):
    SetupRegistry(tmp_path).remember("5.17", "<View/>", {"project": "p"}, "http://ls", "secret")
    other = SetupRegistry(tmp_path)  # a second worker process
    entry = other.get("5.99")
    assert (entry.ls_project, entry.schema, entry.extra_params, entry.hostname) == ("5", "<View/>", {"project": "p"},
                                                                                    "http://ls")
    assert entry.access_token is None
    assert "secret" not in json.dumps(json.loads((tmp_path / "ls-project-5.json").read_text()))
    assert other.get("6") is None
