"""Weak labels of tasks and their resolution to (category, Label Studio label); /predict over real HTTP
sends calibrated scores."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import requests
import uvicorn
from sqlalchemy import select

from genpromp_annotate.evaluation.calibration import ScoreCalibration
from genpromp_annotate.labelstudio.label_config import parse_label_config
from genpromp_annotate.labelstudio.tasks import resolve_weak_label, weak_label_of
from genpromp_annotate.store import queries as q
from genpromp_annotate.store.models import Prediction
from genpromp_annotate_backend.app import create_app
from tests.backend.conftest import LABEL_CONFIG
from tests.backend.test_store_project import _make_project

SETUP = parse_label_config(LABEL_CONFIG.replace("</View>", '<Choices name="cls" toName="image">'
                                                         '<Choice value="Cat"/></Choices></View>'), ["cat", "dog"])


def test_weak_label_sources_in_order():
    assert weak_label_of({"data": {"label": " cat "}}, SETUP) == "cat"
    assert weak_label_of({"data": {"label": ["dog"]}}, SETUP) == "dog"
    choice = {"type": "choices", "from_name": "cls", "value": {"choices": ["Cat"]}}
    assert weak_label_of({"data": {}, "annotations": [{"result": [choice]}]}, SETUP) == "Cat"
    assert weak_label_of({"data": {}, "predictions": [{"result": [choice]}]}, SETUP) == "Cat"
    assert weak_label_of({"data": {}, "annotations": [{"was_cancelled": True, "result": [choice]}]}, SETUP) is None
    other = {**choice, "from_name": "not-ours"}
    assert weak_label_of({"data": {}, "annotations": [{"result": [other]}]}, SETUP) is None
    assert weak_label_of({"data": {"label": ""}}, SETUP) is None


def test_resolution():
    assert resolve_weak_label("Cat", SETUP, ["cat", "dog"]) == ("cat", "Cat")  # a label of the config
    assert resolve_weak_label("dog", SETUP, ["cat", "dog"]) == ("dog", "Dog")  # a category (predicted_values)
    assert resolve_weak_label("DOG", SETUP, ["cat", "dog"]) == ("dog", "Dog")
    assert "neither" in resolve_weak_label("zebra", SETUP, ["cat", "dog"])
    no_label = resolve_weak_label("bird", SETUP, ["cat", "dog", "bird"])
    assert isinstance(no_label, str) and "no <Label>" in no_label


def test_predict_over_http_sends_the_calibrated_score_and_stores_the_raw_one(db, tiny_model_dir, make_state,
                                                                              make_image, media_root):
    """A real uvicorn server on a store project: raw scores until the served version has a calibration,
    then the calibrated P(IoU ≥ 0.5) for every region and task (Label Studio sorts by it); the store
    keeps raw scores, so the version can be fitted again."""
    project = _make_project(db, tiny_model_dir)
    state = make_state(retrain_every=0)
    state._factory = lambda name: project
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(state), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the backend did not start"
            time.sleep(0.1)
        paths = [make_image(f"s{i}.png", size=(80, 60), seed=i, folder=media_root) for i in range(3)]
        tasks = [{"id": i + 1, "data": {"image": str(p), "label": "cat"}} for i, p in enumerate(paths)]
        setup = requests.post(f"{url}/setup", timeout=60, json={
            "project": "3.1", "schema": LABEL_CONFIG.replace("Cat", "cat"), "extra_params": {"project": "birds"}}).json()
        version = setup["model_version"]

        def predict() -> list[dict]:
            answer = requests.post(f"{url}/predict", json={"tasks": tasks, "project": "3.1"}, timeout=120)
            assert answer.status_code == 200, answer.text
            return answer.json()["results"]

        def stored_raw() -> list[float]:
            with db.read() as session:
                rows = session.scalars(select(Prediction).where(Prediction.model_version == version,
                                                                Prediction.source == "model")
                                       .order_by(Prediction.image_id)).all()
                return [r.score for r in rows]

        raw = predict()
        assert all(r["result"] for r in raw)
        raw_scores = [r["result"][0]["score"] for r in raw]
        assert raw_scores == stored_raw() and [r["score"] for r in raw] == raw_scores  # no calibration: raw

        calibration = ScoreCalibration((0.0, 1.0), (0.1, 0.6), boxes=40, hits=12)  # p = 0.1 + 0.5·raw
        with db.write() as session:
            q.save_score_calibration(session, q.get_project(session, "birds"), version, calibration.as_dict(), 40, 12,
                                     "stored boxes")
        calibrated = predict()
        assert [r["model_version"] for r in calibrated] == [version] * 3
        expected = [round(0.1 + 0.5 * s, 4) for s in stored_raw()]
        assert [r["result"][0]["score"] for r in calibrated] == pytest.approx(expected, abs=1e-4)
        assert [r["score"] for r in calibrated] == [r["result"][0]["score"] for r in calibrated]
        assert stored_raw() == raw_scores  # the store keeps raw scores
    finally:
        server.should_exit = True
        thread.join(timeout=30)
