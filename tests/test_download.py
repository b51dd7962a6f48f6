"""Cache folder, download permission, atomic checksum-verified downloads, hub URLs and paths."""
import hashlib
import json
import sys
import types
import urllib.request
from pathlib import Path

import pytest

from vdna.download import (
    ChecksumMismatchError,
    DownloadNotAllowedError,
    MissingFileError,
    cache_dir,
    download_file,
    downloads_allowed,
    sha256_file,
)
from vdna.hub import fetch_hub_file, hub_cache_path, hub_file_url, load_vdna_from_hub

PAYLOAD = b"visual dna " * 1000 + b"\x00\xff"
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("VDNA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("VDNA_ALLOW_DOWNLOAD", raising=False)
    return tmp_path / "home"


@pytest.fixture
def no_network(monkeypatch):
    def fail(*args, **kwargs):
        pytest.fail(f"network access attempted: {args}")

    monkeypatch.setattr(urllib.request, "urlopen", fail)


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "src" / "file.bin"
    path.parent.mkdir()
    path.write_bytes(PAYLOAD)
    return path


def test_cache_dir_env_and_default(monkeypatch, tmp_path):
    monkeypatch.setenv("VDNA_HOME", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x"
    monkeypatch.setenv("VDNA_HOME", "")
    assert cache_dir() == Path.home() / ".cache" / "vdna"
    monkeypatch.delenv("VDNA_HOME")
    assert cache_dir() == Path.home() / ".cache" / "vdna"


@pytest.mark.parametrize("env,arg,expected", [
    (None, None, False), ("1", None, True), ("TRUE", None, True), ("yes", None, True), ("0", None, False),
    ("no", None, False), ("", None, False), ("1", False, False), (None, True, True), ("0", True, True),
])
def test_downloads_allowed(monkeypatch, env, arg, expected):
    if env is None:
        monkeypatch.delenv("VDNA_ALLOW_DOWNLOAD", raising=False)
    else:
        monkeypatch.setenv("VDNA_ALLOW_DOWNLOAD", env)
    assert downloads_allowed(arg) is expected


def test_sha256_file_matches_hashlib(source, tmp_path):
    assert sha256_file(source) == PAYLOAD_SHA
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert sha256_file(empty) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_download_file_url_with_full_and_prefix_checksum(home, source, tmp_path):
    dest = tmp_path / "out" / "sub" / "got.bin"
    assert download_file(source.as_uri(), dest, sha256=PAYLOAD_SHA, allow_download=True) == dest
    assert dest.read_bytes() == PAYLOAD
    dest2 = tmp_path / "out" / "got2.bin"
    download_file(source.as_uri(), dest2, sha256=PAYLOAD_SHA[:8].upper(), allow_download=True)
    assert dest2.read_bytes() == PAYLOAD
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["got2.bin", "sub"]  # no temp files left


def test_download_file_checksum_mismatch_leaves_nothing(home, source, tmp_path):
    dest = tmp_path / "out" / "bad.bin"
    wrong = "0" * 64
    with pytest.raises(ChecksumMismatchError, match=PAYLOAD_SHA):
        download_file(source.as_uri(), dest, sha256=wrong, allow_download=True)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []
    with pytest.raises(ChecksumMismatchError):
        download_file(source.as_uri(), dest, sha256="deadbeef", allow_download=True)
    assert list(dest.parent.iterdir()) == []


def test_download_file_keeps_existing_file_on_mismatch(home, source, tmp_path):
    dest = tmp_path / "keep.bin"
    dest.write_bytes(b"old")
    with pytest.raises(ChecksumMismatchError):
        download_file(source.as_uri(), dest, sha256="1" * 64, allow_download=True)
    assert dest.read_bytes() == b"old"


def test_download_file_monkeypatched_opener_and_network_error(home, tmp_path, monkeypatch):
    class FakeResponse:
        def __init__(self):
            self.chunks = [PAYLOAD[:100], PAYLOAD[100:]]

        def read(self, n):
            return self.chunks.pop(0) if self.chunks else b""

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    calls = []
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: calls.append(url) or FakeResponse())
    dest = tmp_path / "x.bin"
    download_file("https://example.invalid/x.bin", dest, sha256=PAYLOAD_SHA, allow_download=True)
    assert dest.read_bytes() == PAYLOAD and calls == ["https://example.invalid/x.bin"]

    def broken(url, timeout=None):
        raise urllib.error.URLError("no route")

    monkeypatch.setattr(urllib.request, "urlopen", broken)
    with pytest.raises(OSError, match="could not download https://example.invalid/y.bin.*no route"):
        download_file("https://example.invalid/y.bin", tmp_path / "y.bin", allow_download=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]


def test_download_refused_without_permission(home, no_network, tmp_path, monkeypatch):
    with pytest.raises(DownloadNotAllowedError, match="VDNA_ALLOW_DOWNLOAD=1"):
        download_file("https://example.invalid/a.bin", tmp_path / "a.bin")
    monkeypatch.setenv("VDNA_ALLOW_DOWNLOAD", "1")
    with pytest.raises(DownloadNotAllowedError):
        download_file("https://example.invalid/a.bin", tmp_path / "a.bin", allow_download=False)
    assert not (tmp_path / "a.bin").exists()


def test_bad_checksum_spec(home, source, tmp_path):
    with pytest.raises(ValueError, match="hex"):
        download_file(source.as_uri(), tmp_path / "z", sha256="xyz", allow_download=True)
    with pytest.raises(ValueError, match="hex"):
        download_file(source.as_uri(), tmp_path / "z", sha256="abc", allow_download=True)


def test_hub_urls_and_cache_paths(home):
    assert hub_file_url("bramtoula/visual-dna-models", "Mugs/mugs_vit_base/activation_ranges.json") == \
        "https://huggingface.co/bramtoula/visual-dna-models/resolve/main/Mugs/mugs_vit_base/activation_ranges.json"
    assert hub_file_url("o/r", "a b/c.json", repo_type="dataset") == \
        "https://huggingface.co/datasets/o/r/resolve/main/a%20b/c.json"
    assert hub_cache_path("o/r", "x/y.npz", "dataset") == home / "hub" / "dataset" / "o" / "r" / "x" / "y.npz"
    for bad_repo in ("noslash", "a/b/c", "../x"):
        with pytest.raises(ValueError, match="owner/name"):
            hub_file_url(bad_repo, "f.json")
    for bad_path in ("../secret", "/abs.json", "a/../../b"):
        with pytest.raises(ValueError, match="relative path"):
            hub_cache_path("o/r", bad_path)
    with pytest.raises(ValueError, match="repo_type"):
        hub_file_url("o/r", "f.json", repo_type="bucket")


def test_fetch_hub_file_cached_refused_and_downloaded(home, source, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("network access attempted"))
        with pytest.raises(MissingFileError) as err:
            fetch_hub_file("o/r", "d/f.json", "dataset")
        msg = str(err.value)
        assert "needs network access" in msg and str(hub_cache_path("o/r", "d/f.json", "dataset")) in msg
        assert "https://huggingface.co/datasets/o/r/resolve/main/d/f.json" in msg
        cached = hub_cache_path("o/r", "d/g.json", "dataset")
        cached.parent.mkdir(parents=True)
        cached.write_text("{}")
        assert fetch_hub_file("o/r", "d/g.json", "dataset") == cached
    seen = []
    real_urlopen = urllib.request.urlopen
    monkeypatch.setattr(urllib.request, "urlopen",
                        lambda url, timeout=None: seen.append(url) or real_urlopen(source.as_uri()))
    got = fetch_hub_file("o/r", "d/f.json", "dataset", allow_download=True)
    assert got.read_bytes() == PAYLOAD and seen == ["https://huggingface.co/datasets/o/r/resolve/main/d/f.json"]


def test_load_vdna_from_hub_refused_then_from_cache(home, no_network, monkeypatch):
    with pytest.raises(MissingFileError, match="needs network access.*VDNA_ALLOW_DOWNLOAD=1"):
        load_vdna_from_hub("bramtoula/some-dnas", "ffhq/mugs_vit_base")
    base = hub_cache_path("bramtoula/some-dnas", "ffhq/mugs_vit_base", "dataset")
    base.parent.mkdir(parents=True)
    base.with_name(base.name + ".json").write_text(json.dumps({"name": "histogram-1000"}))
    base.with_name(base.name + ".npz").write_bytes(b"")
    loaded = []
    fake = types.ModuleType("vdna.files")
    fake.load_vdna_from_files = lambda path, device="cpu": loaded.append((path, device)) or "the-vdna"
    monkeypatch.setitem(sys.modules, "vdna.files", fake)
    assert load_vdna_from_hub("bramtoula/some-dnas", "ffhq/mugs_vit_base", device="cuda:1") == "the-vdna"
    assert loaded == [(str(base), "cuda:1")]
