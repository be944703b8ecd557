"""The project API on a real store and the tiny model: import bad inputs, annotate, resume, versions, load_boxes."""

import re

import numpy as np
import pytest
import torch
from bad_images import BROKEN, READABLE, good_image, problem_folder
from PIL import Image as PILImage
from PIL import ImageOps
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from genpromp_annotate.engine.localizer import Localizer
from genpromp_annotate.presets import LocalizeConfig
from genpromp_annotate.project import (
    add_labels,
    annotate_project,
    build_localizer,
    config_for_project,
    current_model_version,
    import_records,
    load_boxes_frame,
    project_settings,
)
from genpromp_annotate.sources import ImportRecord, read_source, uri_for_path
from genpromp_annotate.store import queries as q
from genpromp_annotate.store.models import Image, Prediction

# 256 px instead of the paper's 512 keeps these tests fast on 2 CPU cores (same layers: 8×8 and 16×16 exist).
SETTINGS = LocalizeConfig(threshold=0.3, image_size=256)


@pytest.fixture()
def project(db, tiny_model, tiny_model_dir):
    with db.write() as s:
        q.create_project(s, "p", str(tiny_model_dir), project_settings(SETTINGS))
    add_labels(db, "p", ["cat", "goldfish, Carassius auratus"], tiny_model.tokenizer)
    return "p"


def _images(db):
    with db.read() as s:
        query = select(Image).options(selectinload(Image.categories)).order_by(Image.id)
        return {img.uri: img for img in s.scalars(query)}


def test_settings_round_trip_through_the_project(db, project):
    with db.read() as s:
        proj = q.get_project(s, project)
        assert proj.settings == {"preset": "paper", "threshold": 0.3, "image_size": 256}
        assert config_for_project(proj) == SETTINGS
    config = LocalizeConfig(preset="cub-paper", threshold=0.23, timesteps=(0, 50), resolutions=(16,))
    assert project_settings(config) == {"preset": "cub-paper", "timesteps": [0, 50], "resolutions": [16]}


def test_labels_get_meta_tokens_and_distinct_concept_tokens(db, project, tiny_model):
    add_labels(db, project, ["cat, tabby"], tiny_model.tokenizer)
    with db.read() as s:
        categories = q.list_categories(s, q.get_project(s, project))
    assert [(c.name, c.meta_token, c.concept_token) for c in categories] == [
        ("cat", "cat", "<cat>"), ("goldfish, Carassius auratus", "goldfish", "<goldfish>"),
        ("cat, tabby", "cat", "<cat-2>")]


def test_import_records_bad_inputs_with_named_errors_and_the_rest(db, project, tmp_path):
    files = problem_folder(tmp_path / "data")
    report = import_records(db, project, read_source(tmp_path / "data", "imagefolder"))
    assert report.added == 10 and len(report.errors) == 4
    images = _images(db)
    by_name = {name: images[uri_for_path(path)] for name, path in files.items()}
    for name in BROKEN:
        assert by_name[name].status == "error", name
    assert "empty file (0 bytes)" in by_name["empty"].error
    assert "truncated" in by_name["truncated"].error and "truncated.jpg" in by_name["truncated"].error
    assert "bomb" in by_name["bomb"].error and "bomb.png" in by_name["bomb"].error
    assert "unknown label 'zebra'" in by_name["unknown_label"].error
    assert "genpromp-annotate labels p add 'zebra'" in by_name["unknown_label"].error
    for name in READABLE:
        assert by_name[name].status == "pending" and by_name[name].labels == ["cat"], name
    assert (by_name["exif"].width, by_name["exif"].height) == (64, 96)  # the upright (rotated) frame
    assert (by_name["good_png"].width, by_name["good_png"].height) == (80, 120)
    assert by_name["non_utf8"].uri.startswith("file://")


def test_import_is_idempotent_and_a_fixed_label_is_retried(db, project, tiny_model, tmp_path):
    good_image(tmp_path / "data" / "cat" / "a.jpg", 1)
    good_image(tmp_path / "data" / "zebra" / "z.jpg", 2)
    good_image(tmp_path / "copy" / "cat" / "same-bytes.jpg", 1)
    first = import_records(db, project, read_source(tmp_path / "data", "imagefolder"))
    again = import_records(db, project, read_source(tmp_path / "data", "imagefolder"))
    copy = import_records(db, project, read_source(tmp_path / "copy", "imagefolder"))
    assert (first.added, again.added, again.duplicates, copy.added, copy.duplicates) == (2, 0, 2, 0, 1)
    add_labels(db, project, ["zebra"], tiny_model.tokenizer)
    fixed = import_records(db, project, read_source(tmp_path / "data", "imagefolder"))
    assert fixed.updated == 1 and not fixed.errors
    assert {img.status for img in _images(db).values()} == {"pending"}
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(Image)) == 2


def test_missing_file_is_recorded(db, project, tmp_path):
    report = import_records(db, project, [ImportRecord(uri=str(tmp_path / "gone.jpg"), labels=["cat"])])
    assert report.added == 1 and "cannot read" in report.errors[0][1]


@pytest.mark.slow
def test_annotate_boxes_every_readable_image_once_and_keeps_errors(db, project, tiny_model, tmp_path):
    files = problem_folder(tmp_path / "data")
    import_records(db, project, read_source(tmp_path / "data", "imagefolder"))
    runner = build_localizer(db, project, model=tiny_model)
    seen = []
    summary = annotate_project(db, project, runner, batch_size=4, on_batch=seen.append)
    assert summary.images == len(READABLE) and summary.boxes == len(READABLE) and not summary.errors
    assert sum(b.images for b in seen) == len(READABLE)
    images = _images(db)
    assert sorted(i.status for i in images.values()) == ["done"] * len(READABLE) + ["error"] * len(BROKEN)
    with db.read() as s:
        per_image = dict(s.execute(select(Prediction.image_id, func.count()).group_by(Prediction.image_id)).all())
    assert sorted(per_image.values()) == [1] * len(READABLE)
    # EXIF: the box lies in the upright 64×96 frame and equals localizing the upright image directly
    rotated = images[uri_for_path(files["exif"])]
    upright = ImageOps.exif_transpose(PILImage.open(files["exif"])).convert("RGB")
    expected = Localizer(tiny_model, runner.config).localize([upright], ["cat"])[0].boxes[0]
    with db.read() as s:
        box = s.scalar(select(Prediction).where(Prediction.image_id == rotated.id))
    assert (box.x1, box.y1, box.x2, box.y2) == (expected.x1, expected.y1, expected.x2, expected.y2)
    assert 0 <= box.x1 < box.x2 <= 64 and 0 <= box.y1 < box.y2 <= 96
    assert annotate_project(db, project, runner).images == 0  # nothing left for this version


@pytest.mark.slow
def test_annotate_resumes_with_limit_and_force_redoes_once(db, project, tiny_model, tmp_path):
    for i in range(5):
        good_image(tmp_path / "d" / "cat" / f"{i}.jpg", 10 + i)
    import_records(db, project, read_source(tmp_path / "d", "imagefolder"))
    runner = build_localizer(db, project, model=tiny_model)
    assert annotate_project(db, project, runner, batch_size=2, limit=3).images == 3
    assert annotate_project(db, project, runner, batch_size=2).images == 2
    assert annotate_project(db, project, runner, batch_size=2, force=True).images == 5
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(Prediction)) == 5


def test_should_stop_ends_between_batches(db, project, tiny_model, tmp_path):
    for i in range(4):
        good_image(tmp_path / "d" / "cat" / f"{i}.jpg", 20 + i)
    import_records(db, project, read_source(tmp_path / "d", "imagefolder"))
    batches = []
    summary = annotate_project(db, project, build_localizer(db, project, model=tiny_model), batch_size=1,
                               on_batch=batches.append, should_stop=lambda: len(batches) >= 2)
    assert summary.stopped and summary.images == 2
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(Image).where(Image.claimed_by.is_not(None))) == 0


def test_annotate_decodes_ahead_on_a_thread_and_keeps_the_claim_order(db, project, tiny_model, tmp_path,
                                                                        monkeypatch):
    import threading

    from genpromp_annotate.project import annotate as annotate_module

    for i in range(5):
        good_image(tmp_path / "d" / "cat" / f"{i}.jpg", 30 + i)
    import_records(db, project, read_source(tmp_path / "d", "imagefolder"))
    decoded, localized = [], []
    real_decode, real_localize = annotate_module.decode_batch, annotate_module._localize_batch

    def recording_decode(images):
        decoded.append(([i.id for i in images], threading.current_thread().name))
        return real_decode(images)

    def recording_localize(runner, batch, batch_size):
        localized.append([i.id for i in batch.images])
        return real_localize(runner, batch, batch_size)

    monkeypatch.setattr(annotate_module, "decode_batch", recording_decode)
    monkeypatch.setattr(annotate_module, "_localize_batch", recording_localize)
    summary = annotate_project(db, project, build_localizer(db, project, model=tiny_model), batch_size=2)
    assert summary.images == 5
    assert {name for _, name in decoded} == {"annotate-prefetch"}  # never on the model's thread
    assert [ids for ids, _ in decoded] == localized  # the model takes batches in the order they were claimed
    flat = [image_id for ids in localized for image_id in ids]
    assert flat == sorted(flat)  # claims go by image id
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(Prediction)) == 5
        assert s.scalar(select(func.count()).select_from(Image).where(Image.claimed_by.is_not(None))) == 0


def test_trained_tokens_and_settings_change_the_model_version(db, project, tiny_model_dir):
    from genpromp_annotate.engine.loading import load_stable_diffusion

    own_model = load_stable_diffusion(tiny_model_dir, device="cpu", dtype="float32")  # tokens get added to it
    base = build_localizer(db, project, model=own_model)
    assert base.version.tokens_digest == "none" and base.version.unet == "base"
    assert current_model_version(db, project) == base.model_version
    with db.write() as s:
        category = q.get_category(s, q.get_project(s, project), "cat")
        q.set_category_embedding(category, torch.randn(own_model.text_encoder.config.hidden_size))
    trained = build_localizer(db, project, model=own_model)
    assert trained.model_version != base.model_version and trained.version.tokens_digest != "none"
    assert current_model_version(db, project) == trained.model_version  # worked out without the model
    assert re.fullmatch(r"<cat#[0-9a-f]{8}>", trained.localizer.category("cat").concept_token)
    other_tau = build_localizer(db, project, model=own_model, config=SETTINGS.replace(threshold=0.5))
    assert len({base.model_version, trained.model_version, other_tau.model_version}) == 3
    with db.read() as s:
        assert len(q.version_counts(s, q.get_project(s, project))) == 0  # no box yet
        from genpromp_annotate.store.models import ModelVersion
        assert s.scalar(select(func.count()).select_from(ModelVersion)) == 3


def test_selected_finetuned_unet_is_loaded_and_named_in_the_version(db, project, tiny_model_dir, tmp_path):
    from genpromp_annotate.engine.loading import load_stable_diffusion, weights_digest

    own_model = load_stable_diffusion(tiny_model_dir, device="cpu", dtype="float32")
    base = build_localizer(db, project, model=own_model)
    finetuned = load_stable_diffusion(tiny_model_dir, device="cpu", dtype="float32", runtime="diffusers").unet
    with torch.no_grad():
        finetuned.conv_in.bias.add_(0.01)  # stands in for a stage-2 finetune
    finetuned.save_pretrained(tmp_path / "unet")
    with db.write() as s:
        q.select_unet(s, q.get_project(s, project), str(tmp_path / "unet"), None)
    assert current_model_version(db, project) is None  # no digest recorded for the selected UNet
    tuned = build_localizer(db, project, model=own_model)
    assert tuned.version.unet == weights_digest(finetuned) != "base"
    assert tuned.model_version != base.model_version
    assert weights_digest(tuned.localizer.model.unet) == weights_digest(finetuned)


@pytest.mark.slow
def test_load_boxes_one_row_per_box_and_unannotated_images(db, project, tiny_model, tmp_path):
    for i in range(3):
        good_image(tmp_path / "d" / "cat" / f"{i}.jpg", 30 + i)
    import_records(db, project, read_source(tmp_path / "d", "imagefolder"))
    runner = build_localizer(db, project, model=tiny_model)
    annotate_project(db, project, runner, limit=2)
    frame = load_boxes_frame(db, project)
    assert list(frame.columns) == ["image_uri", "width", "height", "label", "x1", "y1", "x2", "y2", "score",
                                   "model_version", "calibrated_score"]
    assert frame["calibrated_score"].isna().all()  # no calibration fitted for the version
    assert len(frame) == 3 and frame["x1"].isna().sum() == 1
    assert set(frame["model_version"].dropna()) == {runner.model_version}
    assert (frame["width"] == 96).all() and (frame["label"] == "cat").all()
    done = frame.dropna(subset=["x1"])
    assert ((done.x2 <= 96) & (done.y2 <= 64) & (done.score >= 0) & (done.score <= 1)).all()
    assert len(load_boxes_frame(db, project, model_version="gp-nothing", include_unannotated=False)) == 0


def test_public_load_boxes(db_url, tiny_model, tiny_model_dir, tmp_path):
    import genpromp_annotate
    from genpromp_annotate.store.database import open_store

    store = open_store(db_url)
    with store.write() as s:
        q.create_project(s, "pub", str(tiny_model_dir))
    add_labels(store, "pub", ["cat"], tiny_model.tokenizer)
    good_image(tmp_path / "d" / "cat" / "a.jpg", 40)
    import_records(store, "pub", read_source(tmp_path / "d", "imagefolder"))
    annotate_project(store, "pub", build_localizer(store, "pub", model=tiny_model))
    store.dispose()
    frame = genpromp_annotate.load_boxes("pub", db=db_url)
    assert len(frame) == 1 and frame.loc[0, "image_uri"] == str(tmp_path / "d" / "cat" / "a.jpg")
    assert np.isfinite(frame.loc[0, ["x1", "y1", "x2", "y2", "score"]].astype(float)).all()


def test_projects_sharing_a_model_keep_their_own_token_rows(db, tiny_model_dir, make_image):
    """Two projects with a label of the same name and different learned tokens on one loaded model: each
    localizes as it would on a model of its own (the second never overwrites the first's vocabulary row)."""
    from genpromp_annotate.engine.loading import load_stable_diffusion

    shared = load_stable_diffusion(tiny_model_dir, device="cpu", dtype="float32")
    hidden = shared.text_encoder.config.hidden_size
    for name, vector in (("a", torch.linspace(-1, 1, hidden)), ("b", torch.linspace(1, -1, hidden))):
        with db.write() as s:
            q.create_project(s, name, str(tiny_model_dir), project_settings(SETTINGS))
        add_labels(db, name, ["cat"], shared.tokenizer)
        with db.write() as s:
            q.set_category_embedding(q.get_category(s, q.get_project(s, name), "cat"), vector)
    first = build_localizer(db, "a", model=shared)
    second = build_localizer(db, "b", model=shared)  # loaded after "a", on the same text encoder
    alone = build_localizer(db, "a", model=load_stable_diffusion(tiny_model_dir, device="cpu", dtype="float32"))
    image = PILImage.open(make_image("cat.png", size=(64, 48))).convert("RGB")
    assert first.localizer.category("cat").concept_token_id != second.localizer.category("cat").concept_token_id
    maps = first.localizer.compute_maps([image], ["cat"])
    assert torch.allclose(maps, alone.localizer.compute_maps([image], ["cat"]), atol=1e-6)
    assert not torch.allclose(maps, second.localizer.compute_maps([image], ["cat"]), atol=1e-4)


def test_a_finetuned_unet_never_replaces_the_shared_models_unet(db, tiny_model_dir, make_image, tmp_path):
    """Two projects on one loaded base model, one with a finetuned UNet: each gets the maps a fresh model
    serving it alone would give, in either order (this failed while build_localizer assigned the
    finetuned UNet into the shared model)."""
    from diffusers import UNet2DConditionModel

    from genpromp_annotate.engine.loading import load_stable_diffusion, weights_digest

    shared = load_stable_diffusion(tiny_model_dir, device="cpu", dtype="float32")
    tuned = UNet2DConditionModel.from_pretrained(tiny_model_dir / "unet")
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(0.05 * torch.randn_like(p))
    tuned.save_pretrained(tmp_path / "tuned")
    for name in ("plain", "tuned"):
        with db.write() as s:
            project = q.create_project(s, name, str(tiny_model_dir), project_settings(SETTINGS))
            if name == "tuned":
                project.unet_path, project.unet_digest = str(tmp_path / "tuned"), weights_digest(tuned)
        add_labels(db, name, ["cat"], shared.tokenizer)
    image = PILImage.open(make_image("a.png", size=(80, 64)))

    def maps(name, model=None):
        return build_localizer(db, name, model=model).localizer.compute_maps([image], ["cat"])

    alone = {name: maps(name) for name in ("plain", "tuned")}  # each from a model of its own
    original_unet = shared.unet
    for name in ("tuned", "plain", "tuned"):
        assert torch.allclose(maps(name, model=shared), alone[name], atol=1e-6), name
    assert shared.unet is original_unet
    assert not torch.allclose(alone["plain"], alone["tuned"], atol=1e-3)  # the two UNets do differ


def test_a_given_meta_word_is_stored_used_and_part_of_the_version(db, tiny_model, tiny_model_dir):
    from genpromp_annotate.errors import ConfigError
    from genpromp_annotate.project import current_model_version

    with db.write() as s:
        q.create_project(s, "m", str(tiny_model_dir), project_settings(SETTINGS))
        q.create_project(s, "plain", str(tiny_model_dir), project_settings(SETTINGS))
    (fish,) = add_labels(db, "m", ["goldfish, Carassius auratus"], tiny_model.tokenizer, meta_word="cat")
    add_labels(db, "plain", ["goldfish, Carassius auratus"], tiny_model.tokenizer)
    cat_id = tiny_model.tokenizer("cat", add_special_tokens=False).input_ids[0]
    assert (fish.meta_token, fish.meta_token_id, fish.meta_forced) == ("cat", cat_id, True)
    forced = build_localizer(db, "m", model=tiny_model)
    plain = build_localizer(db, "plain", model=tiny_model)
    assert forced.localizer.category("goldfish, Carassius auratus").meta_token_id == cat_id
    assert plain.localizer.category("goldfish, Carassius auratus").meta_word == "goldfish"
    assert forced.model_version == current_model_version(db, "m") != plain.model_version
    with pytest.raises(ConfigError, match="encodes to"):
        add_labels(db, "m", ["heron"], tiny_model.tokenizer, meta_word="Carassius auratus")
