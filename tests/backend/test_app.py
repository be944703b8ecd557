"""Contract tests of the HTTP endpoints (method §8) with the real tiny model behind them."""

from __future__ import annotations

import base64
import json
import threading

import pytest
from fastapi.testclient import TestClient
from label_studio_sdk.label_interface import LabelInterface

from genpromp_annotate_backend.app import create_app
from tests.backend.conftest import LABEL_CONFIG


def _tasks(make_image, media_root, labels):
    tasks = []
    for i, label in enumerate(labels):
        path = make_image(f"img{i}.png", size=(96 + 8 * i, 64), seed=i, folder=media_root)
        data = {"image": str(path)}
        if label is not None:
            data["label"] = label
        tasks.append({"id": 100 + i, "data": data, "annotations": [], "predictions": []})
    return tasks


def _setup(client, extra_params=None, project="7.1700000000", schema=LABEL_CONFIG):
    return client.post("/setup", json={"project": project, "schema": schema, "hostname": "http://ls:8080",
                                       "access_token": "token", "extra_params": extra_params})


def test_health_answers_up(client):
    for path in ("/health", "/"):
        response = client.get(path)
        assert response.status_code == 200
        assert response.json() == {"status": "UP", "model_class": "GenPromp"}


def test_setup_returns_a_plain_string_model_version(client):
    response = _setup(client)
    assert response.status_code == 200
    version = response.json()["model_version"]
    assert isinstance(version, str) and version.startswith("gp-")
    assert _setup(client).json()["model_version"] == version  # stable


def test_model_version_changes_with_threshold_and_preset(client):
    base = _setup(client).json()["model_version"]
    tau = _setup(client, json.dumps({"threshold": 0.4})).json()["model_version"]
    cub = _setup(client, {"preset": "cub-paper"}).json()["model_version"]
    attr = _setup(client, schema=LABEL_CONFIG.replace('toName="image"', 'toName="image" threshold="0.4"'))
    assert len({base, tau, cub}) == 3
    assert attr.json()["model_version"] == tau  # a control attribute is the same setting


@pytest.mark.parametrize("body, field", [
    ({"project": "1.1", "hostname": "h"}, "schema"),
    ({"schema": LABEL_CONFIG}, "project"),
    ({"project": "1.1", "schema": ""}, "schema"),
])
def test_setup_missing_fields_are_400_naming_the_field(client, body, field):
    response = client.post("/setup", json=body)
    assert response.status_code == 400
    assert field in response.json()["detail"]


def test_wrong_json_is_400(client):
    for path in ("/setup", "/predict", "/webhook"):
        response = client.post(path, content=b"{not json", headers={"content-type": "application/json"})
        assert response.status_code == 400, path
        assert "detail" in response.json()


def test_setup_rejects_configs_without_rectangles_and_bad_extra_params(client):
    no_rect = '<View><Image name="image" value="$image"/><Choices name="c" toName="image"><Choice value="a"/></Choices></View>'
    response = _setup(client, schema=no_rect)
    assert response.status_code == 400 and "RectangleLabels" in response.json()["detail"]
    response = _setup(client, extra_params="{oops")
    assert response.status_code == 400 and "extra_params" in response.json()["detail"]
    response = _setup(client, extra_params={"threshold": 2})
    assert response.status_code == 400 and "threshold" in response.json()["detail"]


def test_predict_gives_one_valid_entry_per_task_in_order(client, make_image, media_root):
    version = _setup(client).json()["model_version"]
    tasks = _tasks(make_image, media_root, ["Cat", "dog", "Cat"])  # a label value, a category, a label
    response = client.post("/predict", json={"tasks": tasks, "project": "7.1700000000", "label_config": LABEL_CONFIG,
                                             "params": {"login": None, "password": None, "context": None}})
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == len(tasks)
    interface = LabelInterface(LABEL_CONFIG)
    for task, entry in zip(tasks, results):
        assert entry["model_version"] == version
        assert 0.0 <= entry["score"] <= 1.0
        assert entry["result"], "the tiny model's maps always have a region above τ"
        for region in entry["result"]:
            # image i is (96 + 8i) × 64 pixels (see _tasks)
            assert region["original_width"] == 96 + 8 * (task["id"] - 100)
            assert region["original_height"] == 64
            assert region["from_name"] == "box" and region["to_name"] == "image"
        assert interface.validate_prediction({"result": entry["result"], "model_version": version},
                                             return_errors=True) == []
    assert [r["result"][0]["value"]["rectanglelabels"] for r in results] == [["Cat"], ["Dog"], ["Cat"]]


def test_predict_task_without_label_or_image_gets_empty_result_and_batch_goes_on(client, make_image, media_root):
    tasks = _tasks(make_image, media_root, ["Cat", None, "Cat", "Cat"])
    tasks[2]["data"]["image"] = str(media_root / "missing.png")
    tasks[3]["data"]["image"] = "http://169.254.169.254/latest/meta-data"  # refused: not Label Studio
    response = client.post("/predict", json={"tasks": tasks, "label_config": LABEL_CONFIG})
    results = response.json()["results"]
    assert response.status_code == 200 and len(results) == 4
    assert results[0]["result"]
    assert [r["result"] for r in results[1:]] == [[], [], []]


def test_predict_weak_label_from_a_choices_annotation(client, make_image, media_root):
    config = LABEL_CONFIG.replace("</View>", '<Choices name="cls" toName="image"><Choice value="Cat"/>'
                                            '<Choice value="Dog"/></Choices></View>')
    tasks = _tasks(make_image, media_root, [None])
    tasks[0]["annotations"] = [{"id": 1, "result": [{"type": "choices", "from_name": "cls", "to_name": "image",
                                                     "value": {"choices": ["Dog"]}}]}]
    results = client.post("/predict", json={"tasks": tasks, "label_config": config}).json()["results"]
    assert results[0]["result"][0]["value"]["rectanglelabels"] == ["Dog"]


def test_label_field_from_extra_params(client, make_image, media_root):
    _setup(client, {"label_field": "species"}, project="9.1")
    tasks = _tasks(make_image, media_root, [None])
    tasks[0]["data"]["species"] = "Cat"
    results = client.post("/predict", json={"tasks": tasks, "project": "9.1", "label_config": LABEL_CONFIG}).json()
    assert results["results"][0]["result"][0]["value"]["rectanglelabels"] == ["Cat"]


def test_unknown_labels_are_reported_not_guessed(make_state, backend_model, make_image, media_root):
    from genpromp_annotate.presets import LocalizeConfig
    from genpromp_annotate_backend.projects import ModelProject

    state = make_state()
    state._factory = lambda name: ModelProject(name, backend_model, LocalizeConfig(latent="mean"), labels=["cat"])
    with TestClient(create_app(state)) as client:
        setup = _setup(client).json()
        assert setup["unknown_labels"] == ["Dog"]  # "dog,puppy" are not project categories either
        tasks = _tasks(make_image, media_root, ["Dog", "Cat", "zebra"])
        results = client.post("/predict", json={"tasks": tasks, "label_config": LABEL_CONFIG}).json()["results"]
    assert results[0]["result"] == [] and results[2]["result"] == []
    assert results[1]["result"][0]["value"]["rectanglelabels"] == ["Cat"]


def test_predict_missing_tasks_is_400(client):
    response = client.post("/predict", json={"label_config": LABEL_CONFIG})
    assert response.status_code == 400 and "tasks" in response.json()["detail"]


def test_predict_without_any_label_config_is_400(client):
    response = client.post("/predict", json={"tasks": [], "project": "404.1"})
    assert response.status_code == 400 and "label_config" in response.json()["detail"]


def test_basic_auth_on(make_state):
    with TestClient(create_app(make_state(basic_auth_user="ls", basic_auth_pass="s3cret"))) as client:
        assert client.get("/health").status_code == 401
        assert client.get("/health", auth=("ls", "wrong")).status_code == 401
        assert client.get("/health", auth=("ls", "s3cret")).status_code == 200
        token = base64.b64encode(b"ls:s3cret").decode()
        assert client.post("/setup", json={"project": "1.1", "schema": LABEL_CONFIG},
                           headers={"Authorization": f"Basic {token}"}).status_code == 200


def test_basic_auth_off_needs_no_header(client):
    assert client.get("/health").status_code == 200


def test_webhook_stores_human_boxes_in_the_background(make_state, make_image, media_root):
    state = make_state()
    with TestClient(create_app(state)) as client:
        _setup(client)
        region = {"id": "r1", "type": "rectanglelabels", "from_name": "box", "to_name": "image",
                  "original_width": 96, "original_height": 64, "image_rotation": 0,
                  "value": {"x": 25.0, "y": 50.0, "width": 50.0, "height": 25.0, "rotation": 0,
                            "rectanglelabels": ["Cat"]}}
        payload = {"action": "ANNOTATION_CREATED", "project": {"id": 7},
                   "task": {"id": 1, "data": {"image": str(make_image(folder=media_root)), "label": "Cat"}},
                   "annotation": {"id": 55, "task": 1, "result": [region]}}
        response = client.post("/webhook", json=payload)
        assert response.status_code == 200 and response.json()["status"] == "accepted"
        assert state.feedback.wait_idle(30)
        project = state.project(None)
        (stored,) = project.human_boxes["55"]
        # x: 25 % of 96 = 24 → 24 + 50 % of 96 = 72; y: 50 % of 64 = 32 → 32 + 25 % of 64 = 48
        assert (stored.category, stored.box.x1, stored.box.y1, stored.box.x2, stored.box.y2) == ("Cat", 24, 32, 72, 48)
        deleted = client.post("/webhook", json={**payload, "action": "ANNOTATION_DELETED"})
        assert deleted.json()["status"] == "accepted"
        assert state.feedback.wait_idle(30)
        assert "55" not in project.human_boxes
        ignored = client.post("/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 7}})
        assert ignored.status_code == 200 and ignored.json()["status"] == "ignored"
        training = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 7}})
        assert training.json()["status"] == "accepted"
        assert state.feedback.wait_idle(30)
        assert client.post("/webhook", json={"project": {"id": 7}}).status_code == 400  # no action


def test_metrics_count_calls(client, make_image, media_root):
    _setup(client)
    client.post("/predict", json={"tasks": _tasks(make_image, media_root, ["Cat", None]), "label_config": LABEL_CONFIG})
    metrics = client.get("/metrics").json()
    assert metrics["predict_calls"] == 1 and metrics["tasks"] == 2 and metrics["tasks_skipped"] == 1
    assert metrics["model_versions"]


def test_health_and_setup_answer_while_predict_waits_for_the_model(make_state, make_image, media_root):
    state = make_state()
    with TestClient(create_app(state)) as client:
        _setup(client)
        project = state.project(None)
        answers = {}
        with project.shared.lock:  # as if a long UNet batch held the model
            worker = threading.Thread(target=lambda: answers.update(predict=client.post(
                "/predict", json={"tasks": _tasks(make_image, media_root, ["Cat"]), "label_config": LABEL_CONFIG})))
            worker.start()
            worker.join(timeout=0.5)
            assert worker.is_alive()  # /predict is blocked on the model...
            assert client.get("/health").status_code == 200  # ...and the server still answers
            assert _setup(client).status_code == 200
            assert worker.is_alive()
        worker.join(timeout=60)
        assert answers["predict"].status_code == 200 and answers["predict"].json()["results"][0]["result"]
