"""Calibrated box scores through the project API (SQLite and PostgreSQL): fitted per model version on
human boxes, in the box table, used by export --min-score and push; the re-calibration hook fits the new
version from its maps."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select

from genpromp_annotate import project as gp
from genpromp_annotate.evaluation.calibration import CalibrationError, ScoreCalibration, fit_calibration
from genpromp_annotate.exports import filter_boxes
from genpromp_annotate.store import queries as q
from genpromp_annotate.store.models import Image

TRUTH = {"x1": 10.0, "y1": 10.0, "x2": 50.0, "y2": 50.0}
ON = {"x1": 10.0, "y1": 10.0, "x2": 50.0, "y2": 48.0}  # IoU 0.95 with TRUTH
OFF = {"x1": 60.0, "y1": 60.0, "x2": 90.0, "y2": 90.0}  # no overlap


def _project(db, name="p"):
    with db.write() as s:
        project = q.create_project(s, name, "/nowhere/model")
        q.add_category(s, project, "cat", "cat", "<cat>")
        q.add_category(s, project, "dog", "dog", "<dog>")


def _image(s, project, i) -> Image:
    image = Image(project_id=project.id, uri=f"/img/{i}.jpg", content_hash=f"{i:064d}", width=100, height=100,
                  status="done")
    image.categories = [q.get_category(s, project, "cat")]
    s.add(image)
    s.flush()
    return image


def _seed(db, version, boxes, human=True, start=0, name="p"):
    """One image per (score, hit): a cat box of `version` on or off the image's human cat box."""
    with db.write() as s:
        project = q.get_project(s, name)
        cat = q.get_category(s, project, "cat")
        for i, (score, hit) in enumerate(boxes, start):
            image = s.scalar(select(Image).where(Image.project_id == project.id, Image.uri == f"/img/{i}.jpg")) \
                or _image(s, project, i)
            q.add_predictions(s, image, version, [(cat, {**(ON if hit else OFF), "score": score})])
            if human:
                q.add_predictions(s, image, "human", [(cat, TRUTH)], source="human", replace=False,
                                  external_id=f"ls-{i}")


def _rows(n, seed):
    """Overconfident raw scores: a box with raw score s is right with probability s²."""
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random(n), 4)
    return [(float(s), bool(h)) for s, h in zip(scores, rng.random(n) < scores ** 2)]


def test_a_new_version_has_none_until_fitted_and_two_versions_keep_their_own(db):
    _project(db)
    first, second = _rows(40, 0), [(s, True) for s, _ in _rows(40, 1)]
    _seed(db, "gp-one", first)
    _seed(db, "gp-two", second)
    assert gp.load_score_calibration(db, "p", "gp-one") is None
    fit = gp.calibrate_scores(db, "p", "gp-one")
    assert gp.load_score_calibration(db, "p", "gp-two") is None  # fitting one version leaves the other alone
    gp.calibrate_scores(db, "p", "gp-two")
    one, two = gp.load_score_calibration(db, "p", "gp-one"), gp.load_score_calibration(db, "p", "gp-two")
    scores, hits = zip(*first)
    assert one == fit.calibration == fit_calibration(scores, hits)
    assert (one.boxes, one.hits, two.hits) == (40, sum(hits), 40)
    assert two.probability(0.1) > 0.9 > one.probability(0.1)  # every box of gp-two was right
    grid = np.linspace(0, 1, 101)
    assert (np.diff(one.apply(grid)) >= 0).all()
    assert fit.ece(True) < fit.ece(False)
    assert fit.report()["fitted_from"] == "stored boxes"


def test_hits_need_a_human_box_of_the_same_label_on_the_same_image(db):
    _project(db)
    with db.write() as s:
        project = q.get_project(s, "p")
        cat, dog = q.get_category(s, project, "cat"), q.get_category(s, project, "dog")
        a, b, c = (_image(s, project, i) for i in range(3))
        q.add_predictions(s, a, "gp-v", [(cat, {**ON, "score": 0.9})])  # on a's cat box: hit
        q.add_predictions(s, b, "gp-v", [(cat, {**ON, "score": 0.8})])  # b has only a dog box there: miss
        q.add_predictions(s, c, "gp-v", [(cat, {**ON, "score": 0.7})])  # c has no human box: left out
        q.add_predictions(s, a, "human", [(cat, TRUTH)], source="human", replace=False, external_id="1")
        q.add_predictions(s, b, "human", [(dog, TRUTH)], source="human", replace=False, external_id="2")
    scores, hits, reviewed = gp.scores.stored_pairs(db, "p", "gp-v")
    assert scores.tolist() == [0.9, 0.8] and hits.tolist() == [True, False] and reviewed == 2


def test_too_few_boxes_or_no_human_boxes_are_clear_errors(db):
    _project(db)
    _seed(db, "gp-v", _rows(5, 0), human=False)
    with pytest.raises(CalibrationError, match="no human boxes to calibrate scores on"):
        gp.calibrate_scores(db, "p", "gp-v")
    _seed(db, "gp-v", _rows(5, 0))
    with pytest.raises(CalibrationError, match=r"5 box\(es\) on human-annotated images, at least 20 needed.*"
                                               r"--min-boxes"):
        gp.calibrate_scores(db, "p", "gp-v")
    with pytest.raises(CalibrationError, match="gp-other has no box on the 5 human-annotated image"):
        gp.calibrate_scores(db, "p", "gp-other")
    assert gp.load_score_calibration(db, "p", "gp-v") is None
    assert gp.calibrate_scores(db, "p", "gp-v", min_boxes=5).calibration.boxes == 5


def _calibrate(db, version, scores, probabilities, name="p"):
    """Store a hand-made calibration for `version`."""
    calibration = ScoreCalibration(tuple(scores), tuple(probabilities), boxes=50, hits=25)
    with db.write() as s:
        q.save_score_calibration(s, q.get_project(s, name), version, calibration.as_dict(), 50, 25, "stored boxes")
    return calibration


def test_the_box_table_carries_the_calibrated_score_and_min_score_filters_on_it(db):
    """Raw 0.7 of a version calibrated down (→ 0.3) is dropped at --min-score 0.5; raw 0.3 of a version
    calibrated up (→ 0.8) is kept; an uncalibrated version is filtered on its raw score; human boxes stay."""
    _project(db)
    _seed(db, "gp-down", [(0.7, True)], human=False, start=0)
    _seed(db, "gp-up", [(0.3, True)], human=False, start=1)
    _seed(db, "gp-raw", [(0.6, True), (0.4, True)], human=False, start=2)
    _seed(db, "gp-down", [(0.2, True)], start=4)  # with a human box (image 4)
    _calibrate(db, "gp-down", [0.0, 1.0], [0.0, 3 / 7])  # 0.7 → 0.3
    _calibrate(db, "gp-up", [0.0, 0.3, 1.0], [0.5, 0.8, 0.9])  # 0.3 → 0.8
    frame = gp.load_boxes_frame(db, "p", model_version="all", source="all")
    by_uri = {(r.image_uri, r.model_version): r for r in frame.itertuples()}
    assert by_uri[("/img/0.jpg", "gp-down")].calibrated_score == pytest.approx(0.3)
    assert by_uri[("/img/1.jpg", "gp-up")].calibrated_score == pytest.approx(0.8)
    assert np.isnan(by_uri[("/img/2.jpg", "gp-raw")].calibrated_score)
    human = by_uri[("/img/4.jpg", "human")]
    assert np.isnan(human.score) and np.isnan(human.calibrated_score)  # unscored as today

    kept = filter_boxes(frame, min_score=0.5).dropna(subset=["x1"])
    assert sorted(zip(kept["image_uri"], kept["model_version"])) == [
        ("/img/1.jpg", "gp-up"), ("/img/2.jpg", "gp-raw"), ("/img/4.jpg", "human")]
    # every image stays listed (a filter selects boxes, never images)
    assert set(filter_boxes(frame, min_score=0.5)["image_uri"]) == set(frame["image_uri"])


def test_push_sends_the_calibrated_score(db):
    """Label Studio's prediction score (task and region) is the calibrated one where there is one."""
    from types import SimpleNamespace

    from genpromp_annotate.labelstudio.bulk import push_predictions
    from tests.backend.conftest import LABEL_CONFIG

    _project(db)
    with db.write() as s:
        project = q.get_project(s, "p")
        cat = q.get_category(s, project, "cat")
        for i, score in enumerate((0.7, 0.2)):
            image = _image(s, project, i)
            image.uri = f"https://example.org/{i}.jpg"
            q.add_predictions(s, image, "gp-v", [(cat, {**ON, "score": score})])
    imported: list = []
    client = SimpleNamespace(
        projects=SimpleNamespace(get=lambda id: SimpleNamespace(label_config=LABEL_CONFIG),
                                 import_tasks=lambda project, request: imported.extend(request)),
        tasks=SimpleNamespace(list=lambda **kwargs: []))
    push_predictions(db, "p", client, 1, "gp-v")
    assert [t["predictions"][0]["score"] for t in imported] == [0.7, 0.2]  # raw: no calibration yet
    calibration = _calibrate(db, "gp-v", [0.1, 0.9], [0.05, 0.65])
    imported.clear()
    push_predictions(db, "p", client, 1, "gp-v")
    sent = [t["predictions"][0] for t in imported]
    expected = [round(calibration.probability(0.7), 4), round(calibration.probability(0.2), 4)]
    assert [p["score"] for p in sent] == expected == [0.5, 0.125]
    assert [p["result"][0]["score"] for p in sent] == expected


@pytest.mark.slow
def test_recalibration_fits_the_new_version_from_its_maps(db, tiny_model, make_image):
    """Re-calibration changes τ, so the version changes; the hook fits the *new* version on the same
    human-annotated images, from the boxes re-calibration's maps give at the new τ."""
    from genpromp_annotate.engine.images import load_image
    from genpromp_annotate.presets import LocalizeConfig
    from genpromp_annotate.sources import ImportRecord, uri_for_path

    with db.write() as s:
        q.create_project(s, "r", "/nowhere/tiny", gp.project_settings(LocalizeConfig(latent="mean",
                                                                                     threshold=0.95)))
        q.add_category(s, q.get_project(s, "r"), "cat", "cat", "<cat>")
    paths = [make_image(f"r{i}.png", size=(80, 60), seed=i) for i in range(6)]
    gp.import_records(db, "r", [ImportRecord(uri_for_path(p), ["cat"]) for p in paths])
    truth = np.array([[20.0, 15.0, 40.0, 30.0]])  # the bright square of make_image
    with db.write() as s:
        project = q.get_project(s, "r")
        cat = q.get_category(s, project, "cat")
        for image in s.scalars(select(Image).where(Image.project_id == project.id)):
            q.add_predictions(s, image, "human", [(cat, dict(zip(("x1", "y1", "x2", "y2"), truth[0])))],
                              source="human")
    before = gp.current_model_version(db, "r")
    runner = gp.build_localizer(db, "r", model=tiny_model)
    images = [load_image(p) for p in paths]
    report = gp.recalibrate(db, "r", runner.localizer, images, ["cat"] * 6, [truth] * 6, min_boxes=1)
    after = gp.current_model_version(db, "r")
    assert report["recalibrated"] and after != before
    scores = report["scores"]
    assert scores["fitted"] and scores["model_version"] == after and scores["fitted_from"] == "re-calibration maps"
    assert gp.load_score_calibration(db, "r", before) is None
    assert gp.load_score_calibration(db, "r", after).boxes == scores["boxes"] >= 6
    # with the default minimum the hook explains why it did not fit
    again = gp.recalibrate(db, "r", runner.localizer, images, ["cat"] * 6, [truth] * 6)
    assert not again["scores"]["fitted"] and "at least 20 needed" in again["scores"]["reason"]
