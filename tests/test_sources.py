"""Source resolution, and a real HTTP download (from a server on 127.0.0.1) with sha256 check."""

import hashlib
import http.server
import os
import threading
from functools import partial

import pytest

from pipelines.core import paths
from pipelines.core.errors import PipelineError
from pipelines.data.sources import RemoteFile, locate, sha256sum


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


# Archives as downloaded: --data-dir may name the .tar.gz itself.


def make_tar(path, members):
    """A .tar.gz of (TarInfo, bytes or None) pairs, crafted member by member."""
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def member(name, data=None, kind=None, linkname=""):
    import tarfile

    info = tarfile.TarInfo(name)
    info.mode = 0o644
    if kind is not None:
        info.type, info.linkname = kind, linkname
        if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
            info.devmajor, info.devminor = 1, 3  # /dev/null's numbers
    return info, data


def crafted_archives():
    import tarfile

    good = member("batches/data.txt", b"fine")
    return {
        "absolute path": ([good, member("/tmp/pipelines-evil.txt", b"x")], "member '/tmp/pipelines-evil.txt' is an absolute path"),
        "dot-dot": ([good, member("batches/../../evil.txt", b"x")], "member 'batches/../../evil.txt' is a path with '..'"),
        "symlink out": ([good, member("batches/passwd", kind=tarfile.SYMTYPE, linkname="/etc/passwd")],
                        "member 'batches/passwd' is a link pointing out of the folder (to /etc/passwd)"),
        "relative symlink out": ([good, member("batches/up", kind=tarfile.SYMTYPE, linkname="../../outside")],
                                 "member 'batches/up' is a link pointing out of the folder (to ../../outside)"),
        "hard link out": ([good, member("batches/hard", kind=tarfile.LNKTYPE, linkname="../../etc/hosts")],
                          "member 'batches/hard' is a link pointing out of the folder (to ../../etc/hosts)"),
        "character device": ([good, member("batches/null", kind=tarfile.CHRTYPE)], "member 'batches/null' is a device file or pipe"),
        "block device": ([good, member("batches/disk", kind=tarfile.BLKTYPE)], "member 'batches/disk' is a device file or pipe"),
        "fifo": ([good, member("batches/pipe", kind=tarfile.FIFOTYPE)], "member 'batches/pipe' is a device file or pipe"),
    }


@pytest.mark.parametrize("case", list(crafted_archives()))
def test_a_crafted_archive_is_refused_before_anything_is_written(isolated, tmp_path, case):
    members, reason = crafted_archives()[case]
    archive = make_tar(tmp_path / "cucumber-9-python.tar.gz", members)
    with pytest.raises(PipelineError) as error:
        locate("cucumber", "full", str(archive), ())
    assert str(error.value) == f"{archive}: refusing to unpack it: {reason}; is it the archive as published?"
    cache = paths.data_root() / "cache" / "archives"
    assert not cache.exists() or not any(cache.iterdir())  # not even the good member, nor a staging folder
    assert not (tmp_path / "evil.txt").exists() and not os.path.lexists("/tmp/pipelines-evil.txt")


def test_archive_is_unpacked_once_and_reused(isolated, tmp_path):
    import tarfile

    archive = make_tar(tmp_path / "data.tgz", [member("release/a.txt", b"one"), member("release/b.txt", b"two"),
                                               member("release/link", kind=tarfile.SYMTYPE, linkname="a.txt")])
    first = locate("demo", "full", str(archive), ())
    assert first.origin == "data_dir" and first.folder.name == "release"  # the single top folder is descended into
    assert first.folder.parent.parent == paths.data_root() / "cache" / "archives"
    assert (first.folder / "b.txt").read_text() == "two" and (first.folder / "link").read_text() == "one"
    (first.folder / "marker").write_text("still here")
    assert locate("demo", "full", str(archive), ()).folder == first.folder and (first.folder / "marker").is_file()
    make_tar(archive, [member("release/a.txt", b"changed")])  # a new archive content: a new unpack
    second = locate("demo", "full", str(archive), ())
    assert second.folder != first.folder and (second.folder / "a.txt").read_text() == "changed"
    assert not [p for p in second.folder.parent.parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_truncated_archive_is_one_line(isolated, tmp_path):
    archive = make_tar(tmp_path / "data.tar.gz", [member("release/a.bin", bytes(range(256)) * 4000)])
    archive.write_bytes(archive.read_bytes()[:3000])
    with pytest.raises(PipelineError, match=f"{archive} is truncated or not a tar archive") as error:
        locate("demo", "full", str(archive), ())
    assert "\n" not in str(error.value)
    assert not any((paths.data_root() / "cache" / "archives").iterdir())
    with pytest.raises(PipelineError, match="is not a folder or a .tar.gz archive"):
        locate("demo", "full", str(tmp_path / "notes.txt"), ())
