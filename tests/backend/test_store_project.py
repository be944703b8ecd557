"""The backend on a project store (SQLite and PostgreSQL): predictions and human boxes reach the store,
START_TRAINING re-calibrates τ on the human boxes, and the model version follows."""

from __future__ import annotations

import torch
from fastapi.testclient import TestClient
from sqlalchemy import select

from genpromp_annotate.labelstudio.label_config import ProjectSettings
from genpromp_annotate.presets import LocalizeConfig
from genpromp_annotate.store import queries as q
from genpromp_annotate.store.models import Image, Prediction
from genpromp_annotate_backend.app import create_app
from genpromp_annotate_backend.store_project import StoreProject
from tests.backend.conftest import LABEL_CONFIG


def _make_project(db, tiny_model_dir, name="birds", threshold=0.95):
    from genpromp_annotate.project import add_labels, load_tokenizer, project_settings

    with db.write() as session:
        q.create_project(session, name, str(tiny_model_dir),
                         project_settings(LocalizeConfig(latent="mean", threshold=threshold)))
    add_labels(db, name, ["cat", "dog"], load_tokenizer(str(tiny_model_dir)))
    return StoreProject(name, db, device="cpu", dtype="float32")


def test_the_version_known_without_the_model_is_the_one_the_localizer_gets(db, tiny_model_dir, backend_model):
    """One snapshot, one version function: /setup's answer (no model) equals the built Localizer's."""
    from genpromp_annotate import project as gp

    project = _make_project(db, tiny_model_dir)
    with db.write() as session:
        cat = q.get_category(session, q.get_project(session, "birds"), "cat")
        q.set_category_embedding(cat, torch.linspace(-1, 1, backend_model.model.text_encoder.config.hidden_size))
    snapshot = gp.read_snapshot(db, "birds")
    with backend_model.lock:
        built = gp.build_localizer(db, "birds", model=backend_model.model)
    assert snapshot.tokens_digest == built.localizer.tokens_digest != "none"
    assert gp.model_version(snapshot).name == built.model_version == gp.current_model_version(db, "birds")
    assert project.model_version(ProjectSettings()) == built.model_version


def test_model_version_follows_the_store(db, tiny_model_dir):
    project = _make_project(db, tiny_model_dir)
    base = project.model_version(ProjectSettings())
    assert base == project.localizer(ProjectSettings())[1]
    assert project.model_version(ProjectSettings(threshold=0.3)) != base
    with db.write() as session:
        cat = q.get_category(session, q.get_project(session, "birds"), "cat")
        q.set_category_embedding(cat, torch.randn(project.shared.model.text_encoder.config.hidden_size))
    trained = project.model_version(ProjectSettings())
    assert trained != base
    assert project.localizer(ProjectSettings())[1] == trained


def test_predict_webhook_and_recalibration_reach_the_store(db, tiny_model_dir, make_state, make_image, media_root,
                                                          tmp_path, monkeypatch):
    from genpromp_annotate.training.concept_tokens import ConceptTrainingConfig
    from genpromp_annotate.training.runs import TrainOptions

    monkeypatch.setenv("GENPROMP_HOME", str(tmp_path / "home"))
    project = _make_project(db, tiny_model_dir)
    # a short stage 1 (the tiny model learns nothing useful; the test is about the plumbing)
    project.train_options = TrainOptions(concept=ConceptTrainingConfig(epochs=1, batch_size=2, resolution=64),
                                         device="cpu", dtype="float32", checkpoint_every=0)
    state = make_state(retrain_every=0)
    state._factory = lambda name: project
    paths = [make_image(f"b{i}.png", size=(80, 60), seed=i, folder=media_root) for i in range(2)]
    tasks = [{"id": i + 1, "data": {"image": str(p), "label": "cat"}} for i, p in enumerate(paths)]
    with TestClient(create_app(state)) as client:
        setup = client.post("/setup", json={"project": "3.1", "schema": LABEL_CONFIG.replace("Cat", "cat"),
                                            "extra_params": {"project": "birds"}}).json()
        results = client.post("/predict", json={"tasks": tasks, "project": "3.1"}).json()["results"]
        assert [r["model_version"] for r in results] == [setup["model_version"]] * 2
        with db.read() as session:
            rows = session.scalars(select(Prediction).where(Prediction.source == "model")).all()
            assert {r.model_version for r in rows} == {setup["model_version"]}
            assert len({r.image_id for r in rows}) == 2

        # a person draws the whole image as the box of task 1 (80 × 60 pixels)
        region = {"id": "h1", "type": "rectanglelabels", "from_name": "box", "to_name": "image",
                  "original_width": 80, "original_height": 60,
                  "value": {"x": 0, "y": 0, "width": 100, "height": 100, "rotation": 0, "rectanglelabels": ["cat"]}}
        hook = client.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 3},
                                             "task": tasks[0], "annotation": {"id": 77, "result": [region]}})
        assert hook.json()["status"] == "accepted" and state.feedback.wait_idle(60)
        with db.read() as session:
            (human,) = session.scalars(select(Prediction).where(Prediction.source == "human")).all()
            assert (human.x1, human.y1, human.x2, human.y2) == (0, 0, 80, 60)
            assert human.external_id == "ls-annotation:77"
            assert session.scalar(select(Image).where(Image.id == human.image_id)).uri == str(paths[0])

        client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 3}})
        assert state.feedback.wait_idle(120)
        improvement = client.get("/metrics").json()["feedback"]["improvement"]
        # the two predicted images became "cat" images of the store: its token is trained; "dog" has none
        assert improvement["tokens"]["trained"] == ["cat"] and improvement["tokens"]["without_images"] == ["dog"]
        report = improvement["calibration"]
        # τ = 0.95 keeps only the map's peak: a small box, IoU < 0.5 with the whole image; low τ cover it
        assert report["recalibrated"] and report["threshold"] < report["threshold_before"] == 0.95
        assert report["accuracy"] == 100.0
        again = client.post("/setup", json={"project": "3.1", "schema": LABEL_CONFIG.replace("Cat", "cat"),
                                            "extra_params": {"project": "birds"}}).json()
        assert again["model_version"] != setup["model_version"]  # Label Studio will re-predict

        client.post("/webhook", json={"action": "ANNOTATION_DELETED", "project": {"id": 3},
                                      "annotation": {"id": 77}})
        assert state.feedback.wait_idle(60)
        with db.read() as session:
            assert session.scalars(select(Prediction).where(Prediction.source == "human")).all() == []


def test_recalibration_tries_the_omega_grid_and_keeps_the_best(db, tiny_model_dir, make_image, tmp_path):
    """With `calibrate_omegas`, every ω's maps are swept: the current ω's result equals a τ-only
    re-calibration, and the stored (ω, τ) is the best one (the current ω on a tie)."""
    from genpromp_annotate.project import config_for_project, import_records, project_settings
    from genpromp_annotate.sources import ImportRecord, uri_for_path

    project = _make_project(db, tiny_model_dir, threshold=0.95)
    paths = [make_image(f"h{i}.png", size=(80, 60), seed=i) for i in range(3)]
    import_records(db, "birds", [ImportRecord(uri_for_path(p), ["cat"]) for p in paths])
    with db.write() as session:
        proj = q.get_project(session, "birds")
        cat = q.get_category(session, proj, "cat")
        for image in session.scalars(select(Image).where(Image.project_id == proj.id)):
            q.add_predictions(session, image, "human", [(cat, {"x1": 10, "y1": 8, "x2": 50, "y2": 40})],
                              source="human")
        original = dict(proj.settings)

    tau_only = project.recalibrate(ProjectSettings())
    assert tau_only["recalibrated"] and "omega" not in tau_only
    with db.write() as session:
        q.get_project(session, "birds").settings = original  # back to ω 0.6, τ 0.95

    project.calibrate_omegas = (0.2, 0.6, 1.0)  # 0.6 (current) is tried once, first
    report = project.recalibrate(ProjectSettings())
    assert list(report["tried"]) == ["0.6", "0.2", "1.0"] and report["omega_before"] == 0.6
    assert report["tried"]["0.6"] == {"threshold": tau_only["threshold"], "accuracy": tau_only["accuracy"]}
    best = max(entry["accuracy"] for entry in report["tried"].values())
    winner = next(w for w, entry in report["tried"].items() if entry["accuracy"] == best)
    assert report["omega"] == float(winner) and report["accuracy"] == best
    assert report["threshold"] == report["tried"][winner]["threshold"]
    with db.read() as session:
        config = config_for_project(q.get_project(session, "birds"))
    assert (config.omega, config.threshold) == (report["omega"], report["threshold"])
    assert project_settings(config)["threshold"] == report["threshold"]


def test_recalibration_from_a_label_studio_preset_keeps_the_projects_own_settings(db, tiny_model_dir, make_image):
    """A Label Studio config that names a preset sets /predict's settings; re-calibration changes only the
    project's τ (and ω), never its other stored settings (here: latent, timesteps, image size)."""
    from genpromp_annotate.project import config_for_project, import_records, project_settings
    from genpromp_annotate.sources import ImportRecord, uri_for_path

    own = LocalizeConfig(latent="mean", threshold=0.95, timesteps=(0, 50), image_size=256)
    with db.write() as session:
        q.create_project(session, "own", str(tiny_model_dir), project_settings(own))
    from genpromp_annotate.project import add_labels, load_tokenizer

    add_labels(db, "own", ["cat"], load_tokenizer(str(tiny_model_dir)))
    project = StoreProject("own", db, device="cpu", dtype="float32")
    paths = [make_image(f"o{i}.png", size=(80, 60), seed=i) for i in range(2)]
    import_records(db, "own", [ImportRecord(uri_for_path(p), ["cat"]) for p in paths])
    with db.write() as session:
        proj = q.get_project(session, "own")
        cat = q.get_category(session, proj, "cat")
        for image in session.scalars(select(Image).where(Image.project_id == proj.id)):
            q.add_predictions(session, image, "human", [(cat, {"x1": 10, "y1": 8, "x2": 50, "y2": 40})],
                              source="human")

    report = project.recalibrate(ProjectSettings(preset="paper", threshold=0.5))
    assert report["recalibrated"] and report["threshold_before"] == 0.95  # the project's τ, not Label Studio's
    with db.read() as session:
        after = config_for_project(q.get_project(session, "own"))
    assert after == own.replace(threshold=report["threshold"])
