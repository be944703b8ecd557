"""Named queries: project/label errors, runs, predictions, claims shared by concurrent workers."""

import subprocess
import sys
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from genpromp_annotate.engine.boxes import Box
from genpromp_annotate.errors import StoreError, UnknownLabelError
from genpromp_annotate.store import queries as q
from genpromp_annotate.store.model_version import model_version_for
from genpromp_annotate.store.models import Image, Prediction, utc_now

VERSION = "gp-aaaaaaaaaaaa"


def _seed(db, n_images=6):
    with db.write() as s:
        project = q.create_project(s, "p", "/m")
        category = q.add_category(s, project, "cat", "cat", "<cat>")
        for i in range(n_images):
            image = Image(project_id=project.id, uri=f"/img/{i}.jpg", content_hash=f"{i:064d}", width=20, height=10)
            image.categories = [category]
            s.add(image)


def test_missing_project_names_itself_and_the_init_command(db):
    with db.read() as s, pytest.raises(StoreError) as info:
        q.get_project(s, "birds")
    assert "'birds'" in str(info.value) and "genpromp-annotate init birds --model" in str(info.value)


def test_unknown_label_lists_the_known_ones_and_the_fix(db):
    _seed(db, 0)
    with db.read() as s, pytest.raises(UnknownLabelError) as info:
        q.get_category(s, q.get_project(s, "p"), "dog")
    assert "labels: cat" in str(info.value) and "genpromp-annotate labels p add 'dog'" in str(info.value)


def test_duplicates_are_refused(db):
    _seed(db, 0)
    with pytest.raises(StoreError, match="already exists"), db.write() as s:
        q.create_project(s, "p", "/m")
    with pytest.raises(StoreError, match="already exists"), db.write() as s:
        q.add_category(s, q.get_project(s, "p"), "cat", "cat", "<cat>")


def test_training_run_lifecycle(db):
    _seed(db, 0)
    with db.write() as s:
        run = q.create_training_run(s, q.get_project(s, "p"), "concept_tokens", {"lr": 5e-5, "epochs": 2})
        assert run.status == "queued" and run.started_at is None
        q.update_training_run(s, run.id, status="running", progress=0.5, metrics={"loss": 0.2})
        q.update_training_run(s, run.id, metrics={"step": 10})
    with db.write() as s:
        run = q.update_training_run(s, run.id, status="done", progress=1.0)
    assert run.started_at <= run.finished_at
    assert run.metrics == {"loss": 0.2, "step": 10} and run.config == {"lr": 5e-5, "epochs": 2}
    with pytest.raises(StoreError, match="run status"), db.write() as s:
        q.update_training_run(s, run.id, status="exploded")
    with pytest.raises(StoreError, match="no training run"), db.write() as s:
        q.update_training_run(s, 999, status="done")


def test_add_predictions_replaces_the_same_version_and_source_only(db):
    _seed(db, 1)
    with db.write() as s:
        project = q.get_project(s, "p")
        category = q.get_category(s, project, "cat")
        image = s.scalar(select(Image))
        q.add_predictions(s, image, VERSION, [(category, Box(1, 2, 3, 4, 0.5)), (category, Box(0, 0, 9, 9, 0.1))])
        q.add_predictions(s, image, VERSION, [(category, Box(1, 2, 5, 6, 0.7))])  # replaces the two
        q.add_predictions(s, image, "human", [(category, {"x1": 0, "y1": 0, "x2": 4, "y2": 4})], source="human",
                          external_id="ls-12")
        q.add_predictions(s, image, "gp-other", [(category, Box(0, 0, 1, 1, 0.0))])
    with db.read() as s:
        rows = s.scalars(select(Prediction).order_by(Prediction.id)).all()
        assert [(r.model_version, r.source, r.x2, r.score) for r in rows] == [
            (VERSION, "model", 5.0, 0.7), ("human", "human", 4.0, None), ("gp-other", "model", 1.0, 0.0)]
        assert rows[1].external_id == "ls-12"
        counts = {(v.name, v.source): (v.images, v.boxes) for v in q.version_counts(s, q.get_project(s, "p"))}
        assert counts == {(VERSION, "model"): (1, 1), ("human", "human"): (1, 1), ("gp-other", "model"): (1, 1)}
    with pytest.raises(StoreError, match="source"), db.write() as s:
        q.add_predictions(s, s.scalar(select(Image)), VERSION, [], source="robot")


def test_record_model_version_stores_its_parts_once(db):
    _seed(db, 0)
    parts = model_version_for("/m", "none", None, "paper|tau0.25")
    with db.write() as s:
        first = q.record_model_version(s, q.get_project(s, "p"), parts)
        again = q.record_model_version(s, q.get_project(s, "p"), parts)
        assert first.id == again.id and first.name == parts.name and first.unet == "base"


def test_two_writers_recording_the_same_version_share_one_row(db):
    # Writer A records the version and holds its transaction open; writer B, in another thread, records
    # the same version meanwhile. On PostgreSQL B's INSERT waits for A and then hits the unique key;
    # on SQLite B waits for the write lock. Either way both end up with A's row and no error.
    import threading

    _seed(db, 0)
    parts = model_version_for("/m", "none", None, "paper|tau0.25")
    a_inserted, results, errors = threading.Event(), {}, []

    def writer_b():
        try:
            a_inserted.wait(10)
            with db.write() as s:
                results["b"] = q.record_model_version(s, q.get_project(s, "p"), parts).id
        except Exception as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=writer_b)
    thread.start()
    with db.write() as s:
        results["a"] = q.record_model_version(s, q.get_project(s, "p"), parts).id
        a_inserted.set()
        thread.join(0.5)  # give B time to reach its INSERT (or the lock) while A is still open
    thread.join(30)
    assert not errors, errors
    assert results["a"] == results["b"]
    with db.read() as s:
        from genpromp_annotate.store.models import ModelVersion

        assert s.scalar(select(func.count()).select_from(ModelVersion)) == 1


def test_claims_never_overlap_and_done_images_are_not_pending(db):
    _seed(db, 6)
    with db.write() as s:
        first = q.claim_images(s, q.get_project(s, "p"), VERSION, "w1", 4)
    with db.write() as s:
        second = q.claim_images(s, q.get_project(s, "p"), VERSION, "w2", 4)
    assert len(first) == 4 and len(second) == 2
    assert not {i.id for i in first} & {i.id for i in second}
    assert all(i.labels == ["cat"] for i in first + second)  # weak labels come loaded
    with db.write() as s:
        category = q.get_category(s, q.get_project(s, "p"), "cat")
        for image in first:
            q.add_predictions(s, s.get(Image, image.id), VERSION, [(category, Box(0, 0, 1, 1, 0.1))])
        assert q.release_claims(s, "w1") == 4
    with db.write() as s:
        project = q.get_project(s, "p")
        assert q.count_pending(s, project, VERSION) == 2  # w2 still holds 2, not yet annotated
        assert q.claim_images(s, project, VERSION, "w3", 10) == []  # all pending ones are claimed
        assert len(q.claim_images(s, project, "gp-new", "w3", 10)) == 4  # another version: w1's images again


def test_a_worker_never_claims_what_it_already_holds(db):
    _seed(db, 5)
    with db.write() as s:
        first = q.claim_images(s, q.get_project(s, "p"), VERSION, "w1", 2)
    with db.write() as s:  # the next batch, claimed before the first one is stored
        second = q.claim_images(s, q.get_project(s, "p"), VERSION, "w1", 2)
    assert len(first) == len(second) == 2
    assert not {i.id for i in first} & {i.id for i in second}


def test_expired_leases_and_dead_local_workers_free_their_claims(db):
    _seed(db, 3)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    dead_worker = f"{q.worker_id().split(':')[0]}:{int(dead.stdout)}:abc123"
    with db.write() as s:
        project = q.get_project(s, "p")
        assert len(q.claim_images(s, project, VERSION, dead_worker, 1)) == 1
        assert len(q.claim_images(s, project, VERSION, "other-host:1:x", 1, lease_s=-1)) == 1  # lease over
        assert len(q.claim_images(s, project, VERSION, q.worker_id(), 1)) == 1  # alive: this process
    with db.write() as s:
        project = q.get_project(s, "p")
        assert q.release_dead_claims(s, project) == 1  # only the dead local worker
        taken = q.claim_images(s, project, VERSION, "w", 10)
    assert len(taken) == 2  # the dead worker's image and the one whose lease ended


def test_forced_run_takes_every_image_once_and_errors_once(db):
    _seed(db, 3)
    with db.write() as s:
        project = q.get_project(s, "p")
        category = q.get_category(s, project, "cat")
        images = s.scalars(select(Image).order_by(Image.id)).all()
        q.add_predictions(s, images[0], VERSION, [(category, Box(0, 0, 1, 1, 0.1))])
        images[1].status, images[1].error = "error", "broken"
    since = utc_now() + timedelta(microseconds=1)
    with db.read() as s:
        project = q.get_project(s, "p")
        assert q.count_pending(s, project, VERSION) == 1  # normal run: not the done one, not the error
        assert q.count_pending(s, project, VERSION, force_since=since) == 3
    with db.write() as s:
        claimed = q.claim_images(s, q.get_project(s, "p"), VERSION, "w", 10, force_since=since)
        assert len(claimed) == 3
        category = q.get_category(s, q.get_project(s, "p"), "cat")
        for image in claimed:
            if image.status != "error":
                q.add_predictions(s, s.get(Image, image.id), VERSION, [(category, Box(0, 0, 1, 1, 0.1))])
        q.release_claims(s, "w")
    with db.read() as s:
        assert q.count_pending(s, q.get_project(s, "p"), VERSION, force_since=since) == 0
        assert s.scalar(select(func.count()).select_from(Prediction)) == 2
