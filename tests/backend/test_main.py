"""The production server: `python -m genpromp_annotate_backend` with several worker processes, settings from the environment."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
import requests

from tests.backend.conftest import LABEL_CONFIG


@pytest.mark.slow
def test_server_with_two_workers_answers(tiny_model_dir, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "GENPROMP_MODEL": str(tiny_model_dir), "GENPROMP_DEVICE": "cpu", "GENPROMP_DTYPE": "float32",
           "GENPROMP_BACKEND_HOST": "127.0.0.1", "GENPROMP_BACKEND_PORT": str(port),
           "GENPROMP_BACKEND_WORKERS": "2", "GENPROMP_BACKEND_THREADS": "2", "GENPROMP_HOME": str(tmp_path / "home"),
           "GENPROMP_BACKEND_STATE_DIR": str(tmp_path / "state"), "BASIC_AUTH_USER": "ls", "BASIC_AUTH_PASS": "pw",
           "HF_HUB_OFFLINE": "1"}
    env.pop("GENPROMP_PROJECT", None)
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen([sys.executable, "-m", "genpromp_annotate_backend"], env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", auth=("ls", "pw"), timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()[-3000:]
            time.sleep(1)
        assert requests.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 401
        versions = {requests.post(f"http://127.0.0.1:{port}/setup", auth=("ls", "pw"), timeout=30,
                                  json={"project": "1.1", "schema": LABEL_CONFIG}).json()["model_version"]
                    for _ in range(6)}  # whichever worker answers, the version is the same
        assert len(versions) == 1 and versions.pop().startswith("gp-")
        # /health answers as soon as one worker is up; the other may still be loading its model
        while (tmp_path / "server.log").read_text().count("serving project (model only)") < 2:
            assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()[-3000:]
            time.sleep(1)
        time.sleep(1)
        text = (tmp_path / "server.log").read_text()
        assert text.count("serving project (model only)") == 2, text[-3000:]  # one model load per worker
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_calibrate_omegas_from_the_environment():
    from genpromp_annotate.errors import ConfigError
    from genpromp_annotate_backend.__main__ import calibrate_omegas

    assert calibrate_omegas(None) == () and calibrate_omegas(" ") == ()
    assert calibrate_omegas("0.4, 0.5,0.7") == (0.4, 0.5, 0.7)
    with pytest.raises(ConfigError, match="comma-separated numbers"):
        calibrate_omegas("0.4;0.5")
    with pytest.raises(ConfigError, match=r"\[0, 1\], got 1.5"):
        calibrate_omegas("0.5,1.5")


def test_serve_refuses_a_bad_omega_list_before_starting():
    from click.testing import CliRunner

    from genpromp_annotate.cli import cli

    result = CliRunner().invoke(cli, ["serve", "--model", "m", "--calibrate-omegas", "0.5;0.7"])
    assert result.exit_code == 1 and "GENPROMP_CALIBRATE_OMEGAS: expected comma-separated numbers" in result.output
