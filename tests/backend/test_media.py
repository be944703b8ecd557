"""Task media: Label Studio URLs through the SDK helper, local paths only under the roots, the rest refused."""

from __future__ import annotations

import http.server
import threading
from functools import partial

import pytest

from genpromp_annotate.errors import ImageError
from genpromp_annotate.labelstudio.media import MediaFetcher


@pytest.fixture()
def file_server(tmp_path):
    """A local HTTP server (standing in for Label Studio's media endpoint) serving tmp_path/served."""
    served = tmp_path / "served"
    served.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", served
    server.shutdown()


def test_kinds(tmp_path):
    fetcher = MediaFetcher(label_studio_url="http://ls:8080", roots=[tmp_path], allowed_hosts=["cdn.example.com"])
    assert fetcher.kind_of("/data/upload/3/abc.jpg") == "label-studio"
    assert fetcher.kind_of("/data/local-files/?d=x/y.png") == "label-studio"
    assert fetcher.kind_of("s3://bucket/a.jpg") == "cloud"
    assert fetcher.kind_of("http://ls:8080/data/upload/1/a.png") == "http"
    assert fetcher.kind_of("https://cdn.example.com/a.png") == "http"
    assert fetcher.kind_of("http://169.254.169.254/latest/meta-data") == "refused"
    assert fetcher.kind_of("http://localhost:5432/") == "refused"
    assert fetcher.kind_of("ftp://ls/a.png") == "refused"
    assert fetcher.kind_of(str(tmp_path / "a.png")) == "local"


def test_local_paths_only_under_the_roots(tmp_path, make_image):
    root = tmp_path / "root"
    inside = make_image("in.png", folder=root)
    outside = make_image("out.png", folder=tmp_path / "elsewhere")
    (root / "link.png").symlink_to(outside)
    fetcher = MediaFetcher(roots=[root])
    assert fetcher.local_path(str(inside)) == inside.resolve()
    assert fetcher.local_path("in.png") == inside.resolve()  # relative to a root
    assert fetcher.local_path(f"file://{inside}") == inside.resolve()
    for refused in (str(outside), str(root / ".." / "elsewhere" / "out.png"), str(root / "link.png")):
        with pytest.raises(ImageError, match="outside the allowed media roots"):
            fetcher.local_path(refused)
    with pytest.raises(ImageError, match="GENPROMP_MEDIA_ROOTS"):
        MediaFetcher().local_path(str(inside))


def test_label_studio_media_download_and_a_404(file_server, make_image, tmp_path):
    base, served = file_server
    make_image("data/upload/4/cat.png", size=(40, 30), folder=served)
    fetcher = MediaFetcher(label_studio_url=base, api_key="token", cache_dir=tmp_path / "cache")
    image = fetcher.load("/data/upload/4/cat.png")
    assert image.size == (40, 30)
    assert fetcher.load(f"{base}/data/upload/4/cat.png").size == (40, 30)
    with pytest.raises(ImageError, match="HTTP 404"):
        fetcher.load("/data/upload/4/missing.png")


def test_label_studio_media_needs_the_url(tmp_path):
    with pytest.raises(ImageError, match="LABEL_STUDIO_URL"):
        MediaFetcher(cache_dir=tmp_path).local_path("/data/upload/1/a.png")
    with pytest.raises(ImageError, match="task id"):
        MediaFetcher(label_studio_url="http://ls", cache_dir=tmp_path).local_path("s3://b/a.png")


def test_from_env(tmp_path):
    fetcher = MediaFetcher.from_env({"LABEL_STUDIO_URL": "http://ls:8080", "LABEL_STUDIO_API_KEY": "k",
                                     "GENPROMP_MEDIA_ROOTS": f"{tmp_path}:/srv/images",
                                     "GENPROMP_MEDIA_ALLOWED_HOSTS": "a.example, b.example:8443"})
    assert fetcher.label_studio_url == "http://ls:8080" and fetcher.api_key == "k"
    assert [str(r) for r in fetcher.roots] == [str(tmp_path), "/srv/images"]
    assert list(fetcher.allowed_hosts) == ["a.example", "b.example:8443"]
