"""Source readers: imagefolder (with or without split folders), `path,label` CSV, Label Studio exports."""

import json
import os

import pytest

from genpromp_annotate.errors import ConfigError
from genpromp_annotate.sources import (
    SourceError,
    display_uri,
    path_for_uri,
    read_csv_source,
    read_imagefolder,
    read_label_studio,
    read_source,
    read_uri_bytes,
    uri_for_path,
)


def _touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_imagefolder_labels_from_sub_folders_skipping_non_images_and_hidden(tmp_path):
    _touch(tmp_path / "cat" / "a.jpg")
    _touch(tmp_path / "cat" / "deeper" / "b.PNG")
    _touch(tmp_path / "dog" / "c.jpeg")
    _touch(tmp_path / "dog" / "notes.txt")
    _touch(tmp_path / "dog" / ".hidden.jpg")
    _touch(tmp_path / ".cache" / "d.jpg")
    records = list(read_imagefolder(tmp_path))
    assert [(os.path.relpath(r.uri, tmp_path), r.labels, r.split) for r in records] == [
        ("cat/a.jpg", ["cat"], None), ("cat/deeper/b.PNG", ["cat"], None), ("dog/c.jpeg", ["dog"], None)]


def test_imagefolder_with_split_folders(tmp_path):
    _touch(tmp_path / "train" / "cat" / "a.jpg")
    _touch(tmp_path / "val" / "dog" / "b.jpg")
    assert [(r.labels, r.split) for r in read_imagefolder(tmp_path)] == [(["cat"], "train"), (["dog"], "val")]


def test_imagefolder_errors_name_the_folder(tmp_path):
    with pytest.raises(SourceError, match="no sub-folder"):
        list(read_imagefolder(tmp_path))
    with pytest.raises(SourceError, match="not a folder"):
        list(read_imagefolder(tmp_path / "missing"))


def test_csv_rows_header_relative_paths_several_labels_and_split(tmp_path):
    csv_file = tmp_path / "list" / "labels.csv"
    csv_file.parent.mkdir()
    csv_file.write_text('path,label\nimg/a.jpg,cat\n/abs/b.jpg,"goldfish, Carassius auratus",val\n'
                        "img/a.jpg,pet\n\nhttp://example.com/c.jpg,dog\n")
    records = list(read_csv_source(csv_file))
    assert [(r.uri, r.labels, r.split) for r in records] == [
        (str(tmp_path / "list" / "img" / "a.jpg"), ["cat", "pet"], None),
        ("/abs/b.jpg", ["goldfish, Carassius auratus"], "val"),
        ("http://example.com/c.jpg", ["dog"], None)]


def test_csv_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("only-one-column\n")
    with pytest.raises(SourceError, match="line 1"):
        list(read_csv_source(bad))
    empty_label = tmp_path / "e.csv"
    empty_label.write_text("a.jpg,\n")
    assert "empty label" in next(iter(read_csv_source(empty_label))).error


def _ls_task(task_id, image, choices=None, cancelled=False):
    result = [{"type": "choices", "from_name": "label", "to_name": "image", "value": {"choices": choices}}] \
        if choices else []
    return {"id": task_id, "data": {"image": image},
            "annotations": [{"id": task_id * 10, "was_cancelled": cancelled, "result": result}]}


def test_label_studio_full_export_with_local_files_and_uploads(tmp_path):
    export = tmp_path / "export.json"
    export.write_text(json.dumps([
        _ls_task(1, "/data/local-files/?d=birds/a%20b.jpg", ["sparrow"]),
        _ls_task(2, "/data/upload/3/c.jpg", ["heron", "sparrow"]),
        _ls_task(3, "https://example.com/d.jpg", ["heron"], cancelled=True),
        _ls_task(4, "e.jpg", None),
    ]))
    records = list(read_label_studio(export, root=tmp_path / "root"))
    assert records[0].uri == str(tmp_path / "root" / "birds" / "a b.jpg") and records[0].labels == ["sparrow"]
    assert records[1].uri == str(tmp_path / "root" / "upload" / "3" / "c.jpg")
    assert records[1].labels == ["heron", "sparrow"]
    assert records[2].uri == "https://example.com/d.jpg" and records[2].labels == []  # cancelled annotation
    assert records[3].uri == str(tmp_path / "e.jpg") and "no Choices label" in records[3].error


def test_label_studio_min_export_and_image_key(tmp_path):
    export = tmp_path / "min.json"
    export.write_text(json.dumps([{"id": 1, "photo": "/x/a.jpg", "choice": "cat"},
                                  {"id": 2, "photo": "/x/b.jpg", "choice": {"choices": ["cat", "dog"]}}]))
    records = list(read_label_studio(export, image_key="photo"))
    assert [(r.uri, r.labels) for r in records] == [("/x/a.jpg", ["cat"]), ("/x/b.jpg", ["cat", "dog"])]


def test_label_studio_local_files_need_a_root(tmp_path, monkeypatch):
    monkeypatch.delenv("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", raising=False)
    export = tmp_path / "export.json"
    export.write_text(json.dumps([_ls_task(1, "/data/local-files/?d=a.jpg", ["cat"])]))
    with pytest.raises(SourceError, match="--root"):
        list(read_label_studio(export))
    monkeypatch.setenv("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", str(tmp_path / "docs"))
    assert next(iter(read_label_studio(export))).uri == str(tmp_path / "docs" / "a.jpg")


def test_non_utf8_file_name_round_trips_through_a_file_url(tmp_path):
    raw = os.fsencode(tmp_path) + b"/caf\xe9 \xff.jpg"
    with open(raw, "wb") as handle:
        handle.write(b"bytes")
    path = os.fsdecode(raw)
    uri = uri_for_path(path)
    assert uri.startswith("file://") and uri.endswith("/caf%E9%20%FF.jpg")
    uri.encode("utf-8")  # storable in any database
    assert os.fsencode(path_for_uri(uri)) == raw
    assert read_uri_bytes(uri) == b"bytes"
    assert display_uri(uri).endswith("caf\\xe9 \\xff.jpg")
    assert uri_for_path(tmp_path / "plain.jpg") == str(tmp_path / "plain.jpg")


def test_unknown_format():
    with pytest.raises(ConfigError, match="imagefolder"):
        read_source(".", "zip")
