"""What /setup told us about each Label Studio project (label config, extra params, hostname), so that
/predict and /webhook calls that carry less can find it — across worker processes when a state folder
is configured (GENPROMP_BACKEND_STATE_DIR)."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from genpromp_annotate.atomic_files import write_text_atomic
from genpromp_annotate.log import get_logger

logger = get_logger(__name__)


def ls_project_id(project: str | int | None) -> str | None:
    """The Label Studio project id of a `/setup` project uid (`"12.1700000000"` → `"12"`)."""
    if project is None or project == "":
        return None
    return str(project).split(".", 1)[0]


@dataclass
class SetupEntry:
    ls_project: str
    schema: str
    extra_params: Any = None
    hostname: str | None = None
    access_token: str | None = None  # kept in memory only, never written to the state folder


class SetupRegistry:
    """Label Studio project id → its last /setup; in memory, mirrored as JSON files when `state_dir` is set."""

    def __init__(self, state_dir: Path | None = None) -> None:
        self.state_dir = state_dir
        self._entries: dict[str, SetupEntry] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls) -> SetupRegistry:
        folder = os.environ.get("GENPROMP_BACKEND_STATE_DIR")
        return cls(Path(folder) if folder else None)

    def _file(self, ls_project: str) -> Path | None:
        if self.state_dir is None or not ls_project.isdigit():
            return None
        return self.state_dir / f"ls-project-{ls_project}.json"

    def remember(self, project_uid: str, schema: str, extra_params: Any = None, hostname: str | None = None,
                 access_token: str | None = None) -> SetupEntry:
        ls_project = ls_project_id(project_uid) or project_uid
        entry = SetupEntry(ls_project, schema, extra_params, hostname, access_token)
        with self._lock:
            self._entries[ls_project] = entry
        path = self._file(ls_project)
        if path is not None:
            public = {k: v for k, v in asdict(entry).items() if k != "access_token"}
            write_text_atomic(path, json.dumps(public))  # another worker never reads half a file
        return entry

    def get(self, ls_project: str | int | None) -> SetupEntry | None:
        key = ls_project_id(ls_project)
        if key is None:
            return None
        with self._lock:
            if key in self._entries:
                return self._entries[key]
        path = self._file(key)
        if path is not None and path.is_file():
            try:
                data = json.loads(path.read_text())
                return SetupEntry(**data)
            except (OSError, ValueError, TypeError) as exc:
                logger.warning("%s cannot be read (%s); Label Studio will send /setup again", path, exc)
        return None
