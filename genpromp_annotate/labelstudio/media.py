"""Task media → decoded images: Label Studio URLs through the SDK's `get_local_path`, plain local paths
under allowed roots, and nothing else (no server-side request forgery).

Accepted task values:
  - Label Studio media: `/data/upload/…`, `upload/…`, `/storage-data/uploaded/?filepath=…`,
    `/data/local-files/?d=…`, cloud URIs `s3://`, `gs://`, `azure-blob://` (presigned through Label Studio
    with the task id); fetched from LABEL_STUDIO_URL with LABEL_STUDIO_API_KEY.
  - `http(s)://` URLs on the Label Studio host itself or on a host listed in GENPROMP_MEDIA_ALLOWED_HOSTS.
  - Local files (`/abs/path.jpg`, `file:///abs/path.jpg`, or a path relative to a root) that resolve, links
    followed, inside one of GENPROMP_MEDIA_ROOTS (os.pathsep-separated folders).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import requests
from PIL import Image

from genpromp_annotate.engine.images import load_image
from genpromp_annotate.errors import ImageError
from genpromp_annotate.log import get_logger

logger = get_logger(__name__)

LABEL_STUDIO_PREFIXES = ("/data/", "data/", "/upload/", "upload/", "/storage-data/", "storage-data/")
CLOUD_SCHEMES = ("s3", "gs", "azure-blob")
DEFAULT_TIMEOUT_S = 30.0


class _TimeoutSession(requests.Session):
    """A requests session with a default timeout: the SDK's downloader sets none, and a silent host must
    fail one task, not hang the whole /predict call."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs.setdefault("timeout", self._timeout)
        return super().request(method, url, *args, **kwargs)


def _split_env_list(value: str | None, sep: str) -> list[str]:
    return [item.strip() for item in (value or "").split(sep) if item.strip()]


@dataclass
class MediaFetcher:
    """Resolve task image values to local files and decode them.

    Attributes:
        label_studio_url: base URL of Label Studio (`http://host:8080`); None refuses Label Studio media.
        api_key: a Label Studio access token (legacy token or personal access token).
        roots: folders local paths must resolve into; empty refuses every local path.
        allowed_hosts: extra `host[:port]` values whose http(s) URLs may be fetched.
        cache_dir: where downloads are cached (by URL digest).
    """

    label_studio_url: str | None = None
    api_key: str | None = None
    roots: Sequence[Path] = ()
    allowed_hosts: Sequence[str] = ()
    cache_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "genpromp-media-cache")
    timeout_s: float = DEFAULT_TIMEOUT_S

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> MediaFetcher:
        """LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY, GENPROMP_MEDIA_ROOTS, GENPROMP_MEDIA_ALLOWED_HOSTS,
        GENPROMP_MEDIA_CACHE, GENPROMP_MEDIA_TIMEOUT."""
        env = os.environ if environ is None else environ
        kwargs: dict[str, Any] = {
            "label_studio_url": (env.get("LABEL_STUDIO_URL") or env.get("LABEL_STUDIO_HOST") or None),
            "api_key": env.get("LABEL_STUDIO_API_KEY") or env.get("LABEL_STUDIO_ACCESS_TOKEN") or None,
            "roots": [Path(p) for p in _split_env_list(env.get("GENPROMP_MEDIA_ROOTS"), os.pathsep)],
            "allowed_hosts": _split_env_list(env.get("GENPROMP_MEDIA_ALLOWED_HOSTS"), ","),
        }
        if env.get("GENPROMP_MEDIA_CACHE"):
            kwargs["cache_dir"] = Path(env["GENPROMP_MEDIA_CACHE"])
        if env.get("GENPROMP_MEDIA_TIMEOUT"):
            kwargs["timeout_s"] = float(env["GENPROMP_MEDIA_TIMEOUT"])
        return cls(**kwargs)

    def with_label_studio(self, url: str | None, api_key: str | None) -> MediaFetcher:
        """A copy that talks to another Label Studio (e.g. the hostname/token a /setup call sent)."""
        if not url and not api_key:
            return self
        return MediaFetcher(label_studio_url=url or self.label_studio_url, api_key=api_key or self.api_key,
                            roots=self.roots, allowed_hosts=self.allowed_hosts, cache_dir=self.cache_dir,
                            timeout_s=self.timeout_s)

    # ---- policy -----------------------------------------------------------------------------
    def _label_studio_netloc(self) -> str | None:
        return urlparse(self.label_studio_url).netloc.lower() if self.label_studio_url else None

    def _host_allowed(self, netloc: str) -> bool:
        netloc = netloc.lower()
        allowed = {h.lower() for h in self.allowed_hosts}
        ls = self._label_studio_netloc()
        if ls:
            allowed.add(ls)
        return netloc in allowed or netloc.split("@")[-1] in allowed

    def _local_file(self, value: str) -> Path:
        """The file a local path names, when it lies inside an allowed root (links resolved first)."""
        if not self.roots:
            raise ImageError(value, "local paths are refused: no media root is configured "
                                    "(set GENPROMP_MEDIA_ROOTS to the folder that holds the images)")
        raw = Path(unquote(urlparse(value).path) if value.startswith("file://") else value).expanduser()
        candidates = [raw] if raw.is_absolute() else [Path(root) / raw for root in self.roots]
        for candidate in candidates:
            resolved = candidate.resolve()
            for root in self.roots:
                if resolved.is_relative_to(Path(root).resolve()):
                    if not resolved.is_file():
                        raise ImageError(value, "no such file")
                    return resolved
        raise ImageError(value, "refused: the path lies outside the allowed media roots "
                                f"({os.pathsep.join(str(r) for r in self.roots)}); see GENPROMP_MEDIA_ROOTS")

    def kind_of(self, value: str) -> str:
        """'label-studio', 'cloud', 'http', 'local' or 'refused' for a task's image value."""
        parsed = urlparse(value)
        scheme = parsed.scheme.lower()
        if scheme in CLOUD_SCHEMES or value.startswith(tuple(f"{s}:" for s in CLOUD_SCHEMES)):
            return "cloud"
        if scheme in ("http", "https"):
            return "http" if self._host_allowed(parsed.netloc) else "refused"
        if value.startswith(LABEL_STUDIO_PREFIXES):
            # `/data/…` is Label Studio's media namespace unless it is a real file under an allowed root
            if value.startswith("/") and "?" not in value and self.roots:
                try:
                    self._local_file(value)
                    return "local"
                except ImageError:
                    pass
            return "label-studio"
        if scheme == "file" or (scheme == "" and not parsed.netloc):
            return "local"
        return "refused"

    # ---- fetching ---------------------------------------------------------------------------
    def local_path(self, value: str, task_id: int | None = None) -> Path:
        """A local file holding the task's image. Raises ImageError naming the value and the reason."""
        if not isinstance(value, str) or not value.strip():
            raise ImageError(repr(value), "the task's image value is empty or not a string")
        value = value.strip()
        kind = self.kind_of(value)
        if kind == "local":
            return self._local_file(value)
        if kind == "refused":
            raise ImageError(value, "refused: only Label Studio media, hosts in GENPROMP_MEDIA_ALLOWED_HOSTS and "
                                    "files under GENPROMP_MEDIA_ROOTS are fetched")
        if kind in ("label-studio", "cloud") and not self.label_studio_url:
            raise ImageError(value, "a Label Studio media URL, but LABEL_STUDIO_URL is not set")
        if kind == "cloud" and task_id is None:
            raise ImageError(value, "a cloud storage URI needs the task id to be presigned by Label Studio")
        return self._download(value, task_id)

    def _download(self, value: str, task_id: int | None) -> Path:
        from label_studio_sdk._extensions.label_studio_tools.core.utils.io import get_local_path, http_session

        self.cache_dir.mkdir(parents=True, exist_ok=True)
        try:
            with http_session(_TimeoutSession(self.timeout_s)):
                path = get_local_path(value, cache_dir=str(self.cache_dir), hostname=self.label_studio_url,
                                      access_token=self.api_key, task_id=task_id)
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            where = str(getattr(exc.request, "url", None) or "the server")
            raise ImageError(value, f"HTTP {status} from {where}") from None
        except requests.RequestException as exc:
            raise ImageError(value, f"cannot be downloaded: {type(exc).__name__}: {exc}") from None
        except (OSError, ValueError) as exc:  # the SDK's own "cannot resolve" errors are these
            raise ImageError(value, f"cannot be resolved: {exc}") from None
        return Path(path)

    def load(self, value: str, task_id: int | None = None) -> Image.Image:
        """The task's image decoded as upright RGB (errors name the task value, not the cache file)."""
        return load_image(self.local_path(value, task_id), name=value)


def durable_uri(project_name: str, image_uri: str, path: Path | None) -> str:
    """Where the store keeps a task image: a local task image keeps its path; a downloaded one is copied
    next to the store (the download cache is temporary), so re-calibration and token training can read it."""
    import shutil

    from genpromp_annotate.project.images import content_digest
    from genpromp_annotate.store.database import genpromp_home

    if path is None or (Path(image_uri).is_absolute() and Path(image_uri).resolve() == path.resolve()):
        return image_uri
    folder = genpromp_home() / "projects" / project_name / "label-studio-media"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{content_digest(path)}{path.suffix.lower() or '.img'}"
    if not target.exists():
        shutil.copyfile(path, target)
    return str(target)
