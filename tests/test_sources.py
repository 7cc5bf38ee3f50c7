"""Source resolution, and a real HTTP download (from a server on 127.0.0.1) with sha256 check."""

import hashlib
import http.server
import threading
from functools import partial

import pytest

from pipelines import paths
from pipelines.errors import PipelineError
from pipelines.sources import RemoteFile, locate, sha256sum


@pytest.fixture
def http_folder(tmp_path):
    """Serve tmp_path/served over HTTP on a free loopback port; yields (folder, base_url)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_sample_and_data_dir(isolated, tmp_path):
    assert locate("digits", "sample", None, ()).origin == "sample"
    assert locate("digits", "full", str(tmp_path), ()).folder == tmp_path
    with pytest.raises(PipelineError, match="is not a folder"):
        locate("digits", "full", str(tmp_path / "missing"), ())


def test_download_checks_sha256_then_caches(isolated, http_folder):
    folder, url = http_folder
    payload = b"real bytes" * 1000
    (folder / "file.bin").write_bytes(payload)
    remote = RemoteFile("file.bin", f"{url}/file.bin", hashlib.sha256(payload).hexdigest())
    first = locate("demo", "full", None, (remote,))
    assert first.origin == "download" and (first.folder / "file.bin").read_bytes() == payload
    (folder / "file.bin").unlink()  # the cache must be used from now on, without the network
    assert locate("demo", "full", None, (remote,)).origin == "cache"


def test_corrupt_download_leaves_nothing(isolated, http_folder):
    folder, url = http_folder
    (folder / "file.bin").write_bytes(b"tampered")
    remote = RemoteFile("file.bin", f"{url}/file.bin", "0" * 64)
    with pytest.raises(PipelineError, match="sha256"):
        locate("demo", "full", None, (remote,))
    assert not list(paths.download_dir("demo").iterdir())


def test_unreachable_download_names_the_alternatives(isolated):
    remote = RemoteFile("mnist.npz", "http://127.0.0.1:9/mnist.npz", "0" * 64)
    with pytest.raises(PipelineError) as error:
        locate("digits", "full", None, (remote,), describe="mnist.npz")
    message = str(error.value)
    assert "--data-dir" in message and "DATA=sample" in message and "\n" not in message


def test_sha256sum(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"abc")
    assert sha256sum(path) == hashlib.sha256(b"abc").hexdigest()
