"""`annotate`: in process, then as real processes — SIGKILL and restart, Ctrl-C, two processes at once."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest
from bad_images import good_image
from click.testing import CliRunner
from sqlalchemy import func, select

from genpromp_annotate.cli import cli
from genpromp_annotate.store.database import open_store
from genpromp_annotate.store.models import Image, Prediction, Project


def _invoke(db_url, *args, code=0):
    result = CliRunner().invoke(cli, ["--db", db_url, *args])
    assert result.exit_code == code, result.output + repr(result.exception)
    return result.output


@pytest.fixture()
def env(monkeypatch, tmp_path):
    monkeypatch.setenv("GENPROMP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return {**os.environ}


def _project(db_url, tiny_model_dir, folder, n_images):
    _invoke(db_url, "init", "p", "--model", str(tiny_model_dir), "--label", "cat")
    store = open_store(db_url)
    with store.write() as s:  # 256 px instead of 512: the same code path, 4× less work on 2 CPU cores
        project = s.scalar(select(Project))
        project.settings = {**project.settings, "image_size": 256}
    store.dispose()
    for i in range(n_images):
        good_image(folder / "cat" / f"{i:02d}.jpg", 100 + i, size=(64, 48))
    _invoke(db_url, "import", "p", str(folder))


def _predictions_per_image(db_url):
    store = open_store(db_url)
    with store.read() as s:
        counts = dict(s.execute(select(Image.id, func.count(Prediction.id)).outerjoin(Prediction)
                                .group_by(Image.id)).all())
        statuses = [row[0] for row in s.execute(select(Image.status))]
        claimed = s.scalar(select(func.count()).select_from(Image).where(Image.claimed_by.is_not(None)))
    store.dispose()
    return counts, statuses, claimed


def _done(db_url):
    store = open_store(db_url)
    with store.read() as s:
        n = s.scalar(select(func.count()).select_from(Image).where(Image.status == "done"))
    store.dispose()
    return n


def _start(db_url, env, *args):
    return subprocess.Popen([sys.executable, "-m", "genpromp_annotate", "--db", db_url, "annotate", "p", *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _annotated(output):
    return int(re.search(r"(\d+) images annotated", output).group(1))


@pytest.mark.slow
def test_annotate_resumes_and_reports(db_url, env, tiny_model_dir, tmp_path):
    _project(db_url, tiny_model_dir, tmp_path / "data", 3)
    assert re.search(r"current:   gp-[0-9a-f]{12}, 3 image\(s\) to annotate with it", _invoke(db_url, "status", "p"))
    out = _invoke(db_url, "annotate", "p", "--limit", "2", "--batch-size", "1", "--device", "cpu")
    assert "2 image(s) to annotate" in out and "2 images annotated (2 boxes, 0 errors)" in out
    version = re.search(r"model version (gp-[0-9a-f]{12})", out).group(1)
    assert f"current:   {version}, 1 image(s) to annotate with it" in _invoke(db_url, "status", "p")
    assert "images/s" in out and "model version gp-" in out
    assert "1 images annotated" in _invoke(db_url, "annotate", "p")
    assert "0 images annotated" in _invoke(db_url, "annotate", "p")
    assert "3 images annotated" in _invoke(db_url, "annotate", "p", "--force")
    counts, statuses, claimed = _predictions_per_image(db_url)
    assert sorted(counts.values()) == [1, 1, 1] and statuses == ["done"] * 3 and claimed == 0
    status = _invoke(db_url, "status", "p")
    assert re.search(r"gp-[0-9a-f]{12} \(model\): 3 images, 3 boxes", status)
    assert "tokens none | unet base | paper|" in status and "|s256|" in status


def test_annotate_missing_project(db_url, env):
    assert "no project named 'ghost'" in _invoke(db_url, "annotate", "ghost", code=1)


@pytest.mark.slow
def test_sigkill_mid_run_then_restart_annotates_every_image_once(db_url, env, tiny_model_dir, tmp_path):
    n = 12
    _project(db_url, tiny_model_dir, tmp_path / "data", n)
    process = _start(db_url, env, "--batch-size", "1")
    deadline = time.monotonic() + 240
    while _done(db_url) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "annotate ended before it could be killed: " + process.communicate()[1]
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    done_at_kill = _done(db_url)
    assert 2 <= done_at_kill < n
    again = subprocess.run([sys.executable, "-m", "genpromp_annotate", "--db", db_url, "annotate", "p",
                            "--batch-size", "4"], env=env, capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stderr
    assert _annotated(again.stdout) == n - done_at_kill  # the killed batch is redone, nothing else
    counts, statuses, claimed = _predictions_per_image(db_url)
    assert sorted(counts.values()) == [1] * n and statuses == ["done"] * n and claimed == 0


@pytest.mark.slow
def test_ctrl_c_finishes_the_batch_and_stops_cleanly(db_url, env, tiny_model_dir, tmp_path):
    _project(db_url, tiny_model_dir, tmp_path / "data", 12)
    process = _start(db_url, env, "--batch-size", "2")
    deadline = time.monotonic() + 240
    while _done(db_url) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "stopping after the current batch" in stderr and "stopped early" in stderr
    counts, statuses, claimed = _predictions_per_image(db_url)
    assert claimed == 0  # claims released on the way out
    assert _annotated(stdout) == statuses.count("done") < 12
    assert all(counts[i] in (0, 1) for i in counts)


@pytest.mark.slow
def test_two_processes_share_the_work_without_locking_errors(db_url, env, tiny_model_dir, tmp_path):
    n = 12
    _project(db_url, tiny_model_dir, tmp_path / "data", n)
    first, second = _start(db_url, env, "--batch-size", "2"), _start(db_url, env, "--batch-size", "2")
    outputs = [p.communicate(timeout=600) for p in (first, second)]
    for process, (stdout, stderr) in zip((first, second), outputs):
        assert process.returncode == 0, stderr
        assert "database is locked" not in stderr + stdout and "Traceback" not in stderr
    assert sum(_annotated(stdout) for stdout, _ in outputs) == n  # no image annotated twice
    counts, statuses, claimed = _predictions_per_image(db_url)
    assert sorted(counts.values()) == [1] * n and statuses == ["done"] * n and claimed == 0
