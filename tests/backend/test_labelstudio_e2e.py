"""End to end with a real Label Studio 1.23.2 (its own venv: `.ci/labelstudio.sh`).

Label Studio is started from GENPROMP_TEST_LABEL_STUDIO (the `label-studio` executable that
`.ci/labelstudio.sh` prints); without it the test is skipped, and when it is set but the server does not
come up, the test fails. Our backend runs on a real uvicorn server in this process, on the shipped toy
model (which localizes the toy world's shapes, so the regions Label Studio stores can be checked against
the objects) and a project store, so the test can read the store the webhook writes to.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import zipfile
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from tests.backend.conftest import LABEL_CONFIG
from tests.toy.test_geometry import localized_items, on_object

# The toy model's classes; "Square" is a Label Studio value mapped to the category `square`.
TOY_CONFIG = """
<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="box" toName="image">
    <Label value="circle"/>
    <Label value="Square" predicted_values="square"/>
    <Label value="triangle"/><Label value="star"/><Label value="cross"/>
  </RectangleLabels>
</View>
"""

LS_ENV = "GENPROMP_TEST_LABEL_STUDIO"
LS_START_TIMEOUT_S = 300  # first start migrates a fresh database: about 30-90 s on 2 cores
TOKEN = "e2e0123456789abcdef0123456789abcdef0123"
USER, PASSWORD = "e2e@example.com", "e2e-password-123"

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(url: str, timeout: float, process: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            pytest.fail(f"Label Studio exited with code {process.returncode} before answering {url}:\n{tail}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(1.0)
    tail = log.read_text(errors="replace")[-3000:] if log else ""
    pytest.fail(f"{url} did not answer within {timeout:.0f} s:\n{tail}")


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    """A running Label Studio: (base url, media root); killed at the end."""
    executable = os.environ.get(LS_ENV)
    if not executable:
        pytest.skip(f"{LS_ENV} is not set: run `export {LS_ENV}=$(.ci/labelstudio.sh)` to build Label "
                    "Studio 1.23.2 in its own venv and run this test")
    if not (shutil.which(executable) or Path(executable).is_file()):
        pytest.fail(f"{LS_ENV}={executable} is not an executable; rebuild it with .ci/labelstudio.sh")
    root = tmp_path_factory.mktemp("label-studio")
    media = root / "media"
    media.mkdir()
    port = _free_port()
    env = {**os.environ,
           "LABEL_STUDIO_BASE_DATA_DIR": str(root / "data"), "LABEL_STUDIO_USERNAME": USER,
           "LABEL_STUDIO_PASSWORD": PASSWORD, "LABEL_STUDIO_USER_TOKEN": TOKEN,
           "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true", "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(media),
           "LATEST_VERSION_CHECK": "false", "COLLECT_ANALYTICS": "false", "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "",
           "ML_BLOCK_LOCAL_IP": "false", "USE_DEFAULT_BANNED_SUBNETS": "false", "DJANGO_DB": "sqlite"}
    for name in ("GENPROMP_DATABASE_URL", "DATABASE_URL", "POSTGRE_HOST", "LABEL_STUDIO_URL"):
        env.pop(name, None)
    log = root / "label-studio.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [executable, "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port),
             "--enable-legacy-api-token"], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=root,
            start_new_session=True)
    try:
        _wait_for(f"http://127.0.0.1:{port}/health", LS_START_TIMEOUT_S, process, log)
        yield f"http://127.0.0.1:{port}", media
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


@pytest.fixture()
def backend_server(db, toy_model_dir, make_state, media_root, label_studio, tmp_path, monkeypatch):
    """Our backend on a real uvicorn server (a thread), serving store project `shapes` on the toy model."""
    monkeypatch.setenv("GENPROMP_HOME", str(tmp_path / "home"))
    import uvicorn

    from genpromp_annotate.labelstudio.media import MediaFetcher
    from genpromp_annotate.presets import preset
    from genpromp_annotate.project import add_labels, load_tokenizer, project_settings
    from genpromp_annotate.store import queries as q
    from genpromp_annotate.toy.world import BASE_CLASSES
    from genpromp_annotate_backend.app import create_app
    from genpromp_annotate_backend.store_project import StoreProject

    with db.write() as session:
        q.create_project(session, "shapes", str(toy_model_dir), project_settings(preset("toy")))
    add_labels(db, "shapes", list(BASE_CLASSES), load_tokenizer(str(toy_model_dir)))
    project = StoreProject("shapes", db, device="cpu", dtype="float32")
    ls_url, _ = label_studio
    state = make_state(retrain_every=0)
    # media only through Label Studio, with the user's token: the path a deployed backend takes
    state.fetcher = MediaFetcher(label_studio_url=ls_url, api_key=TOKEN, cache_dir=media_root / "cache")
    state.predictor.fetcher = state.feedback.fetcher = state.fetcher
    state._factory = lambda name: project
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(state), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    _wait_for(f"http://127.0.0.1:{port}/health", 60)
    yield f"http://127.0.0.1:{port}", state, db
    server.should_exit = True
    thread.join(timeout=30)


def test_label_studio_round_trip(label_studio, backend_server, toy_model):
    from label_studio_sdk import LabelStudio

    from genpromp_annotate.store.models import Prediction
    from genpromp_annotate.toy.world import render_scene

    ls_url, media = label_studio
    backend_url, state, db = backend_server
    client = LabelStudio(base_url=ls_url, api_key=TOKEN)
    config = TOY_CONFIG

    project = client.projects.create(title="genpromp e2e", label_config=config)
    sizes = [(96, 64), (80, 80), (64, 96)]
    boxed = localized_items(toy_model, 40)  # images whose 64-px original the toy model boxes right
    items = [next(it for it in boxed if it.label == label) for label in ("circle", "square", "star")]
    names, gts = [], {}
    (media / "dataset").mkdir(exist_ok=True)
    for i, (item, size) in enumerate(zip(items, sizes)):
        image, objects = render_scene(item.scene, *size)
        image.save(media / "dataset" / f"e2e{i}.png")
        names.append(f"dataset/e2e{i}.png")
        gts[names[-1]] = [box for cls, box in objects if cls == item.label]
    # Label Studio serves /data/local-files/ only for files under a storage (a sub-folder of its root)
    client.import_storage.local.create(project=project.id, path=str(media / "dataset"), use_blob_urls=True,
                                       title="images")
    tasks = [{"image": f"/data/local-files/?d={name}", "label": label}
             for name, label in zip(names, ["circle", "Square", "star"])]
    client.projects.import_tasks(project.id, request=tasks)

    backend = client.ml.create(project=project.id, url=backend_url, title="genpromp",
                               extra_params=json.dumps({"project": "shapes"}), is_interactive=False)
    assert str(client.ml.get(backend.id).state).endswith("CO"), client.ml.get(backend.id)  # CONNECTED
    version = state.project("shapes").model_version(state.labeling_setup(project.id, config).settings)

    client.actions.create(id="retrieve_tasks_predictions", project=project.id, selected_items={"all": True})
    listed = list(client.tasks.list(project=project.id, fields="all"))
    assert len(listed) == 3
    from label_studio_sdk.label_interface import LabelInterface

    interface = LabelInterface(config)
    for task in listed:
        predictions = client.predictions.list(task=task.id)
        assert len(predictions) == 1, f"task {task.id} has {len(predictions)} predictions"
        prediction = predictions[0]
        assert prediction.model_version == version
        assert prediction.result, f"task {task.id}: empty prediction"
        assert interface.validate_prediction({"result": prediction.result, "model_version": version},
                                             return_errors=True) == []
        name = task.data["image"].split("d=")[-1]
        width, height = sizes[names.index(name)]
        region = prediction.result[0]
        assert (region["original_width"], region["original_height"]) == (width, height)
        # the percent region Label Studio stored, back in pixels, lands on the task's object
        v = region["value"]
        box = [v["x"] * width / 100, v["y"] * height / 100, (v["x"] + v["width"]) * width / 100,
               (v["y"] + v["height"]) * height / 100]
        assert on_object(box, gts[name]), (name, box, gts[name])

    # a person corrects task 1: the webhook carries the box into the store
    first = listed[0]
    box = {"id": "human1", "type": "rectanglelabels", "from_name": "box", "to_name": "image",
           "original_width": 96, "original_height": 64, "image_rotation": 0,
           "value": {"x": 25, "y": 25, "width": 50, "height": 50, "rotation": 0, "rectanglelabels": ["circle"]}}
    annotation = client.annotations.create(first.id, result=[box], project=project.id)
    deadline = time.monotonic() + 60
    rows = []
    while time.monotonic() < deadline and not rows:
        state.feedback.wait_idle(5)
        with db.read() as session:
            rows = session.scalars(select(Prediction).where(Prediction.source == "human")).all()
        time.sleep(0.5)
    assert rows, f"the annotation never reached the store; feedback: {state.feedback.stats()}"
    # x 25 % of 96 = 24 → 24 + 48 = 72; y 25 % of 64 = 16 → 16 + 32 = 48
    assert [(r.x1, r.y1, r.x2, r.y2, r.external_id) for r in rows] == [(24, 16, 72, 48, f"ls-annotation:{annotation.id}")]

    # Label Studio's own COCO export reads original_width/height of the regions
    export = requests.get(f"{ls_url}/api/projects/{project.id}/export", params={"exportType": "COCO"},
                          headers={"Authorization": f"Token {TOKEN}"}, timeout=120)
    assert export.status_code == 200, export.text[:500]
    with zipfile.ZipFile(io.BytesIO(export.content)) as archive:
        coco = json.loads(archive.read("result.json"))
    assert [a["bbox"] for a in coco["annotations"]] == [[24.0, 16.0, 48.0, 32.0]]
    assert {c["name"] for c in coco["categories"]} >= {"circle", "Square"}


def test_push_then_pull_through_the_cli(label_studio, db, db_url, tiny_model_dir, make_image, tmp_path, monkeypatch):
    """`push` imports tasks with predictions in chunks (and resumes), `pull` stores human boxes."""
    monkeypatch.setenv("GENPROMP_HOME", str(tmp_path / "home"))
    from click.testing import CliRunner
    from label_studio_sdk import LabelStudio

    from genpromp_annotate.cli import cli
    from genpromp_annotate.presets import LocalizeConfig
    from genpromp_annotate.project import add_labels, import_records, load_tokenizer, project_settings
    from genpromp_annotate.sources import read_source
    from genpromp_annotate.store import queries as q
    from genpromp_annotate.store.models import Prediction

    ls_url, media = label_studio
    folder = media / f"push-{db.engine.dialect.name}"
    for i in range(3):
        make_image(f"cat/p{i}.png", size=(72, 56), seed=10 + i, folder=folder)
    with db.write() as session:
        q.create_project(session, "pushed", str(tiny_model_dir), project_settings(LocalizeConfig(latent="mean")))
    add_labels(db, "pushed", ["cat"], load_tokenizer(str(tiny_model_dir)))
    import_records(db, "pushed", read_source(folder, "imagefolder"))

    client = LabelStudio(base_url=ls_url, api_key=TOKEN)
    config = LABEL_CONFIG.replace('value="Cat"', 'value="cat"')
    project = client.projects.create(title="genpromp push", label_config=config)
    client.import_storage.local.create(project=project.id, path=str(folder), title="pushed images")
    args = ["--db", db_url, "push", "pushed", "--ls-url", ls_url, "--api-key", TOKEN, "--ls-project",
            str(project.id), "--local-files-root", str(media), "--chunk-size", "2", "--device", "cpu"]
    runner = CliRunner()
    first = runner.invoke(cli, args, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert "3 new task(s)" in first.output
    tasks = list(client.tasks.list(project=project.id, fields="all"))
    assert len(tasks) == 3
    for task in tasks:
        (prediction,) = client.predictions.list(task=task.id)
        assert prediction.model_version.startswith("gp-") and prediction.result
        assert task.data["label"] == "cat" and task.data["image"].startswith("/data/local-files/?d=push-")
    again = runner.invoke(cli, args, catch_exceptions=False)
    assert "0 new task(s), 0 new prediction(s), 3 up to date" in again.output, again.output

    box = {"id": "p1", "type": "rectanglelabels", "from_name": "box", "to_name": "image", "original_width": 72,
           "original_height": 56, "value": {"x": 50, "y": 50, "width": 50, "height": 50, "rotation": 0,
                                            "rectanglelabels": ["cat"]}}
    client.annotations.create(tasks[0].id, result=[box], project=project.id)
    pulled = runner.invoke(cli, ["--db", db_url, "pull", "pushed", "--ls-url", ls_url, "--api-key", TOKEN,
                                 "--ls-project", str(project.id)], catch_exceptions=False)
    assert pulled.exit_code == 0 and "1 annotation(s), 1 human box(es) stored" in pulled.output, pulled.output
    with db.read() as session:
        (human,) = session.scalars(select(Prediction).where(Prediction.source == "human")).all()
        # 50 % of 72 = 36 → 72; 50 % of 56 = 28 → 56; and it is the task's image (matched by content)
        assert (human.x1, human.y1, human.x2, human.y2) == (36, 28, 72, 56)
        assert human.image_id == tasks[0].data["genpromp_image_id"]
