"""score_calibrations: one fit per (project, model version), replaced by a new fit, gone with the project;
the model boxes of human-annotated images; migration 0004 down and up again (SQLite and PostgreSQL)."""

from sqlalchemy import inspect, select

from genpromp_annotate.engine.boxes import Box
from genpromp_annotate.store import queries as q
from genpromp_annotate.store import schema
from genpromp_annotate.store.models import Image, Project, StoredScoreCalibration

KNOTS = {"format": "isotonic-v1", "scores": [0.1, 0.5], "probabilities": [0.2, 0.8], "boxes": 30, "hits": 15,
         "prior": 2.0}


def _project(db, name="p"):
    with db.write() as s:
        project = q.create_project(s, name, "/m")
        q.add_category(s, project, "cat", "cat", "<cat>")


def test_a_version_has_no_calibration_until_fitted_and_two_versions_keep_their_own(db):
    _project(db)
    with db.read() as s:
        assert q.score_calibration(s, q.get_project(s, "p"), "gp-a") is None
    with db.write() as s:
        project = q.get_project(s, "p")
        q.save_score_calibration(s, project, "gp-a", KNOTS, 30, 15, "stored boxes")
        q.save_score_calibration(s, project, "gp-b", {**KNOTS, "probabilities": [0.4, 0.5]}, 40, 20, "stored boxes")
    with db.read() as s:
        project = q.get_project(s, "p")
        found = q.score_calibrations(s, project)
        assert sorted(found) == ["gp-a", "gp-b"]
        assert found["gp-a"].knots == KNOTS and found["gp-b"].knots["probabilities"] == [0.4, 0.5]
        assert sorted(q.score_calibrations(s, project, ["gp-b", "gp-c"])) == ["gp-b"]
        assert q.score_calibration(s, project, "gp-c") is None


def test_fitting_again_replaces_the_row(db):
    _project(db)
    with db.write() as s:
        q.save_score_calibration(s, q.get_project(s, "p"), "gp-a", KNOTS, 30, 15, "stored boxes")
    with db.read() as s:
        first = q.score_calibration(s, q.get_project(s, "p"), "gp-a").fitted_at
    with db.write() as s:
        q.save_score_calibration(s, q.get_project(s, "p"), "gp-a", {**KNOTS, "boxes": 60}, 60, 40,
                                 "re-calibration maps")
    with db.read() as s:
        rows = s.scalars(select(StoredScoreCalibration)).all()
        assert len(rows) == 1
        assert (rows[0].boxes, rows[0].hits, rows[0].fitted_from) == (60, 40, "re-calibration maps")
        assert rows[0].knots["boxes"] == 60 and rows[0].fitted_at >= first


def test_projects_keep_separate_calibrations_and_deleting_a_project_deletes_its_own(db):
    _project(db, "p")
    _project(db, "other")
    with db.write() as s:
        q.save_score_calibration(s, q.get_project(s, "p"), "gp-a", KNOTS, 30, 15, "stored boxes")
        q.save_score_calibration(s, q.get_project(s, "other"), "gp-a", {**KNOTS, "hits": 3}, 30, 3, "stored boxes")
    with db.write() as s:
        s.delete(s.scalar(select(Project).where(Project.name == "other")))
    with db.read() as s:
        assert [r.hits for r in s.scalars(select(StoredScoreCalibration))] == [15]


def test_model_boxes_of_human_annotated_images_only(db):
    _project(db)
    with db.write() as s:
        project = q.get_project(s, "p")
        cat = q.get_category(s, project, "cat")
        images = [Image(project_id=project.id, uri=f"/i/{i}.jpg", content_hash=f"{i:064d}", width=20, height=10)
                  for i in range(3)]
        s.add_all(images)
        s.flush()
        for image in images:
            q.add_predictions(s, image, "gp-a", [(cat, Box(1, 1, 5, 5, 0.5))])
            q.add_predictions(s, image, "gp-b", [(cat, Box(1, 1, 6, 6, 0.7))])
        q.add_predictions(s, images[1], "human", [(cat, {"x1": 1, "y1": 1, "x2": 5, "y2": 5})], source="human",
                          replace=False, external_id="ls-1")
    with db.read() as s:
        found = q.model_boxes_on_human_annotated_images(s, q.get_project(s, "p"), "gp-a")
        assert [(p.image.uri, p.score, p.category.name) for p in found] == [("/i/1.jpg", 0.5, "cat")]
        assert q.model_boxes_on_human_annotated_images(s, q.get_project(s, "p"), "gp-x") == []


def test_migration_0004_downgrades_and_upgrades_with_the_other_rows_kept(db):
    from alembic import command

    _project(db)
    with db.write() as s:
        q.save_score_calibration(s, q.get_project(s, "p"), "gp-a", KNOTS, 30, 15, "stored boxes")
    with db.engine.begin() as connection:
        command.downgrade(schema.alembic_config(connection), "0003")
    with db.engine.connect() as connection:
        assert schema.current_revision(connection) == "0003"
        assert "score_calibrations" not in inspect(connection).get_table_names()
    before, after = schema.upgrade_schema(db.engine)
    assert (before, after) == ("0003", schema.head_revision()) and after == "0004"
    with db.read() as s:
        project = q.get_project(s, "p")
        assert q.list_categories(s, project)[0].name == "cat"
        assert q.score_calibrations(s, project) == {}  # the fits went with the table; fitting again rebuilds them
