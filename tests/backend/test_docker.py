"""docker-compose.yml and Dockerfile.backend: the compose file validates and wires what the backend needs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_docker_compose_config_validates(tmp_path):
    command = _compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    result = subprocess.run([*command, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True,
                            cwd=ROOT, timeout=120, check=False)
    assert result.returncode == 0, result.stderr


def test_compose_wires_label_studio_postgres_and_the_backend():
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    assert set(services) == {"postgres", "label-studio", "backend"}
    assert services["label-studio"]["image"].endswith(":1.23.2")
    ls_env = services["label-studio"]["environment"]
    backend = services["backend"]
    env = backend["environment"]
    assert ls_env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] == env["GENPROMP_MEDIA_ROOTS"] == "/data/images"
    assert ls_env["ML_BLOCK_LOCAL_IP"] == ls_env["USE_DEFAULT_BANNED_SUBNETS"] == "false"
    assert env["LABEL_STUDIO_URL"] == "http://label-studio:8080"
    assert "LABEL_STUDIO_API_KEY" in env and env["GENPROMP_DATABASE_URL"].startswith("postgresql+psycopg://")
    for name in ("GENPROMP_BACKEND_WORKERS", "GENPROMP_BACKEND_THREADS", "BASIC_AUTH_USER", "BASIC_AUTH_PASS"):
        assert name in env
    mounts = {volume.split(":")[1] for volume in backend["volumes"]}
    assert {"/data/images", "/models"} <= mounts
    assert backend["build"]["dockerfile"] == "Dockerfile.backend" and (ROOT / "Dockerfile.backend").is_file()
    assert "driver: nvidia" in COMPOSE.read_text()  # the GPU stanza, ready to uncomment


def test_dockerfile_runs_the_backend_module():
    text = (ROOT / "Dockerfile.backend").read_text()
    assert 'CMD ["python", "-m", "genpromp_annotate_backend"]' in text and "EXPOSE 9090" in text
