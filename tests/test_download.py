"""Downloads end to end without the internet: a server on 127.0.0.1 (tests/local_server.py) serves
small fake checkpoints at plain URLs (torch.hub's downloader) and hub files (huggingface_hub's
hf_hub_download, HF_ENDPOINT pointed at it). First use downloads and verifies, second use hits the
cache without a request, a corrupt download is rejected and leaves no file, offline mode fails with
the exact file to place where."""
import dataclasses
import hashlib
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vdna.download import (
    ChecksumMismatchError,
    DownloadNotAllowedError,
    MissingFileError,
    cache_dir,
    download_url,
    downloads_allowed,
)
from vdna.extractors import MissingRangesError, MissingWeightsError, get_extractor, weights_cache_path
from vdna.extractors.vit import ViTFeatures
from vdna.extractors.zoo import RANGES_HUB_REPO, ZOO
from vdna.hub import fetch_hub_file, hub_cache_path, hub_file_url, load_vdna_from_hub

from dna_factory import assert_same_data, make_dna
from local_server import LocalServer

PAYLOAD = b"visual dna " * 1000 + b"\x00\xff"
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture(scope="module")
def server():
    s = LocalServer()
    yield s
    s.close()


@pytest.fixture
def online(tmp_path, monkeypatch, server):
    """An empty cache, downloads on (VDNA_OFFLINE lifted), the hub endpoint on the local server."""
    server.files.clear()
    server.requests.clear()
    home = tmp_path / "home"
    monkeypatch.setenv("VDNA_HOME", str(home))
    monkeypatch.delenv("VDNA_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", server.root)
    return home


def _files_under(folder: Path):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# ---------------------------------------------------------------- policy and cache folder

def test_cache_dir_env_and_default(monkeypatch, tmp_path):
    monkeypatch.setenv("VDNA_HOME", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x"
    monkeypatch.setenv("VDNA_HOME", "")
    assert cache_dir() == Path.home() / ".cache" / "vdna"
    monkeypatch.delenv("VDNA_HOME")
    assert cache_dir() == Path.home() / ".cache" / "vdna"


@pytest.mark.parametrize("offline,hf_offline,arg,hub,expected", [
    (None, None, None, False, True),    # downloads on first use by default
    (None, None, None, True, True),
    ("1", None, None, False, False), ("TRUE", None, None, True, False), ("yes", None, None, False, False),
    ("0", None, None, False, True), ("", None, None, True, True),
    (None, "1", None, True, False),     # HF_HUB_OFFLINE applies to hub files only
    (None, "1", None, False, True),
    ("1", None, True, False, True),     # the explicit switch wins both ways
    ("1", "1", True, True, True),
    (None, None, False, False, False), (None, None, False, True, False),
])
def test_downloads_allowed(monkeypatch, offline, hf_offline, arg, hub, expected):
    for name, value in (("VDNA_OFFLINE", offline), ("HF_HUB_OFFLINE", hf_offline)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert downloads_allowed(arg, hub=hub) is expected


def test_allow_download_must_be_a_bool_or_none():
    with pytest.raises(TypeError, match="allow_download must be True, False or None"):
        downloads_allowed("no")


# ---------------------------------------------------------------- plain URLs (torch.hub)

def test_download_url_full_and_prefix_digest(online, server, tmp_path):
    url = server.add("/files/a.bin", PAYLOAD)
    dest = tmp_path / "out" / "a.bin"
    assert download_url(url, dest, sha256=PAYLOAD_SHA, progress=False) == dest
    assert dest.read_bytes() == PAYLOAD
    dest2 = tmp_path / "out" / "b.bin"
    download_url(url, dest2, sha256=PAYLOAD_SHA[:8].upper(), progress=False)
    assert dest2.read_bytes() == PAYLOAD
    assert _files_under(tmp_path / "out") == ["a.bin", "b.bin"]  # no temporary files left


def test_download_url_corrupt_is_rejected_and_leaves_nothing(online, server, tmp_path):
    url = server.add("/files/c.bin", PAYLOAD[:-1] + b"\x00")  # one byte differs from the published file
    out = tmp_path / "out"
    for spec in (PAYLOAD_SHA, PAYLOAD_SHA[:8]):
        with pytest.raises(ChecksumMismatchError, match="discarded") as err:
            download_url(url, out / "c.bin", sha256=spec, progress=False)
        assert spec in str(err.value)
        assert _files_under(out) == []
    (out / "c.bin").write_bytes(b"previous good file")
    with pytest.raises(ChecksumMismatchError):
        download_url(url, out / "c.bin", sha256=PAYLOAD_SHA, progress=False)
    assert _files_under(out) == ["c.bin"] and (out / "c.bin").read_bytes() == b"previous good file"


def test_download_url_errors_name_the_url(online, server, tmp_path):
    with pytest.raises(OSError, match=r"could not download http://127\.0\.0\.1:\d+/missing\.bin.*404"):
        download_url(server.url("/missing.bin"), tmp_path / "m.bin", progress=False)
    with pytest.raises(ValueError, match="8 to 64 hex digits"):
        download_url(server.url("/x"), tmp_path / "z", sha256="xyz")
    assert not (tmp_path / "m.bin").exists()


def test_download_url_stalled_server_times_out(online, tmp_path):
    """A server that accepts the connection and never answers: an OSError naming the URL after the
    timeout, not a hang, and nothing left at the destination."""
    import socket
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # the kernel completes the handshake; nobody ever reads or answers
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/w.pth"
        t0 = time.monotonic()
        with pytest.raises(OSError, match=r"could not download http://127\.0\.0\.1:\d+/w\.pth.*timed out"):
            download_url(url, tmp_path / "w.pth", progress=False, timeout=0.5)
        assert time.monotonic() - t0 < 30  # bounded by the timeout (generous for a loaded machine)
    finally:
        listener.close()
    assert not (tmp_path / "w.pth").exists() and _files_under(tmp_path) == []


def test_download_url_truncated_body_is_rejected(online, server, tmp_path, monkeypatch):
    """A body shorter than its Content-Length (a dropped connection): OSError, nothing written."""
    import http.client

    url = server.add("/files/t.bin", PAYLOAD)
    real_read = http.client.HTTPResponse.read

    def short_read(self, amt=None):
        data = real_read(self, amt)
        return data[: len(data) // 2] if data else data

    monkeypatch.setattr(http.client.HTTPResponse, "read", short_read)
    with pytest.raises(OSError, match=r"could not download .*t\.bin"):
        download_url(url, tmp_path / "t.bin", progress=False)
    assert _files_under(tmp_path) == []


# ---------------------------------------------------------------- checkpoints at plain URLs

def _tiny_vit_entry(monkeypatch, name, **changes):
    """Swap a ViT entry's network for a 2-block, width-32 one with the same key layout (small files)."""
    real = ZOO[name]
    monkeypatch.setitem(ZOO, name, dataclasses.replace(
        real, build=lambda: ViTFeatures(32, 2, 2, patch=16, image_size=224), **changes))


def _tiny_vit_checkpoint(seed, wrap=None):
    """(bytes of a torch.save'd tiny-ViT state dict, the state) in the publishers' layout."""
    gen = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        net = ViTFeatures(32, 2, 2, patch=16, image_size=224)
    state = {k: torch.randn(v.shape, generator=gen) for k, v in net.state_dict().items()}
    buf = io.BytesIO()
    torch.save(state if wrap is None else {wrap: state}, buf)
    return buf.getvalue(), state


def _assert_weights(ext, state):
    got = ext.net.state_dict()
    assert sorted(got) == sorted(state)
    for k in state:
        assert torch.equal(got[k], state[k]), k


def test_checkpoint_first_use_downloads_then_cache(online, server, monkeypatch):
    body, state = _tiny_vit_checkpoint(1)
    url = server.add("/dino/dino_vitbase16_pretrain.pth", body)
    _tiny_vit_entry(monkeypatch, "dino_vit_base", url=url, sha256=hashlib.sha256(body).hexdigest())
    ext = get_extractor("dino_vit_base")
    _assert_weights(ext, state)
    assert server.requests == [("GET", "/dino/dino_vitbase16_pretrain.pth")]
    dest = weights_cache_path("dino_vit_base", "dino_vitbase16_pretrain.pth")
    assert dest == online / "weights" / "dino_vit_base" / "dino_vitbase16_pretrain.pth"
    assert dest.read_bytes() == body and ext.weights_sha256 == hashlib.sha256(body).hexdigest()
    _assert_weights(get_extractor("dino_vit_base"), state)  # second use: the cache, no request
    assert len(server.requests) == 1
    assert _files_under(online) == ["weights/dino_vit_base/dino_vitbase16_pretrain.pth"]


def test_checkpoint_corrupt_download_rejected_and_nothing_cached(online, server, monkeypatch):
    body, _ = _tiny_vit_checkpoint(2)
    url = server.add("/dino/dino_vitbase16_pretrain.pth", body[:-1] + bytes([body[-1] ^ 1]))
    _tiny_vit_entry(monkeypatch, "dino_vit_base", url=url, sha256=hashlib.sha256(body).hexdigest()[:8])
    with pytest.raises(ChecksumMismatchError, match="published SHA-256"):
        get_extractor("dino_vit_base")
    assert _files_under(online) == []


def test_checkpoint_offline_names_url_and_exact_path(online, server, monkeypatch):
    body, state = _tiny_vit_checkpoint(3)
    url = server.add("/dino/dino_vitbase16_pretrain.pth", body)
    _tiny_vit_entry(monkeypatch, "dino_vit_base", url=url)
    monkeypatch.setenv("VDNA_OFFLINE", "1")
    dest = online / "weights" / "dino_vit_base" / "dino_vitbase16_pretrain.pth"
    with pytest.raises(MissingWeightsError) as err:
        get_extractor("dino_vit_base")
    msg = str(err.value)
    assert "VDNA_OFFLINE is set" in msg and f"download {url}" in msg and f"place it at {dest}" in msg
    assert server.requests == []
    _assert_weights(get_extractor("dino_vit_base", allow_download=True), state)  # the explicit switch wins
    assert server.requests == [("GET", "/dino/dino_vitbase16_pretrain.pth")]


# ---------------------------------------------------------------- hub files (huggingface_hub)

def test_hub_checkpoint_and_ranges_first_use_then_cache(online, server, monkeypatch):
    body, state = _tiny_vit_checkpoint(4, wrap="state_dict")
    _tiny_vit_entry(monkeypatch, "mugs_vit_base")
    info = ZOO["mugs_vit_base"].info
    ranges_json = json.dumps({key: {l: {str(i): v for i in range(c)} for l, c in info.neurons_per_layer.items()}
                              for key, v in (("mins_per_neuron", -1.0), ("maxs_per_neuron", 2.0))}).encode()
    w_path = server.add_hub_file(RANGES_HUB_REPO, "Mugs/mugs_vit_base/weights.pth", body)
    r_path = server.add_hub_file(RANGES_HUB_REPO, "Mugs/mugs_vit_base/activation_ranges.json", ranges_json)
    ext = get_extractor("mugs_vit_base")
    _assert_weights(ext, state)
    ranges = ext.activation_ranges()
    np.testing.assert_array_equal(ranges["block_1"][0], np.full(768, -1.0))
    np.testing.assert_array_equal(ranges["last_norm"][1], np.full(768, 2.0))
    assert server.requests == [("HEAD", w_path), ("GET", w_path), ("HEAD", r_path), ("GET", r_path)]
    hub = Path("hub", "model", "bramtoula", "visual-dna-models", "Mugs", "mugs_vit_base")
    assert _files_under(online) == [str(hub / "activation_ranges.json"), str(hub / "weights.pth")]
    assert (online / hub / "weights.pth").read_bytes() == body
    ext = get_extractor("mugs_vit_base")  # second use: the cache, no request
    _assert_weights(ext, state)
    ext.activation_ranges()
    assert len(server.requests) == 4


def test_hub_checkpoint_from_the_earlier_cache_location(online, server, monkeypatch):
    body, state = _tiny_vit_checkpoint(5)
    _tiny_vit_entry(monkeypatch, "mugs_vit_base")
    legacy = weights_cache_path("mugs_vit_base", "weights.pth")
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(body)
    _assert_weights(get_extractor("mugs_vit_base"), state)
    assert server.requests == []


def test_hub_corrupt_download_rejected_and_leaves_no_file(online, server):
    # the hub reports the SHA-256 of LFS files (ETag): a body that does not match it is discarded
    server.add_hub_file("o/r", "d/f.bin", PAYLOAD[:-1] + b"\x00", advertised=PAYLOAD)
    with pytest.raises(ChecksumMismatchError, match="SHA-256 the hub reported.*discarded"):
        fetch_hub_file("o/r", "d/f.bin")
    assert _files_under(online) == []
    # a pinned digest is checked even when the hub's ETag agrees with the (wrong) body
    server.add_hub_file("o/r", "d/g.bin", PAYLOAD[:-1] + b"\x00")
    with pytest.raises(ChecksumMismatchError, match="published SHA-256"):
        fetch_hub_file("o/r", "d/g.bin", sha256=PAYLOAD_SHA)
    assert _files_under(online) == []
    server.add_hub_file("o/r", "d/h.bin", PAYLOAD)
    assert fetch_hub_file("o/r", "d/h.bin", sha256=PAYLOAD_SHA[:12]).read_bytes() == PAYLOAD
    assert _files_under(online) == ["hub/model/o/r/d/h.bin"]
    cached = hub_cache_path("o/r", "d/h.bin")
    cached.write_bytes(b"tampered")
    with pytest.raises(ChecksumMismatchError, match="delete it to download it again"):
        fetch_hub_file("o/r", "d/h.bin", sha256=PAYLOAD_SHA)


def test_hub_missing_file_and_offline_modes(online, server, monkeypatch):
    with pytest.raises(MissingFileError, match="not found on the hub"):
        fetch_hub_file("o/r", "nope.json")
    server.requests.clear()
    server.add_hub_file("o/r", "d/f.json", b"{}")
    dest = online / "hub" / "model" / "o" / "r" / "d" / "f.json"
    url = f"{server.root}/o/r/resolve/main/d/f.json"
    assert hub_file_url("o/r", "d/f.json") == url
    for env, reason in (("VDNA_OFFLINE", "VDNA_OFFLINE is set"), ("HF_HUB_OFFLINE", "HF_HUB_OFFLINE is set")):
        monkeypatch.setenv(env, "1")
        with pytest.raises(DownloadNotAllowedError) as err:
            fetch_hub_file("o/r", "d/f.json")
        assert reason in str(err.value) and f"download {url}" in str(err.value)
        assert f"place it at {dest}" in str(err.value)
        monkeypatch.delenv(env)
    with pytest.raises(DownloadNotAllowedError, match="allow_download=False"):
        fetch_hub_file("o/r", "d/f.json", allow_download=False)
    assert server.requests == []
    monkeypatch.setenv("VDNA_OFFLINE", "1")
    assert fetch_hub_file("o/r", "d/f.json", allow_download=True) == dest
    dest.write_bytes(b"{ }")  # placed by hand: used as is, offline
    assert fetch_hub_file("o/r", "d/f.json").read_bytes() == b"{ }"


def test_hub_ranges_offline_error_says_what_to_do(online, monkeypatch, tmp_path):
    _tiny_vit_entry(monkeypatch, "mugs_vit_base")
    body, _ = _tiny_vit_checkpoint(6)
    path = tmp_path / "w.pth"
    path.write_bytes(body)
    monkeypatch.setenv("VDNA_OFFLINE", "1")
    ext = get_extractor("mugs_vit_base", extractor_weights=path)
    with pytest.raises(MissingRangesError, match=r"VDNA_OFFLINE is set.*place it at .*activation_ranges\.json.*ranges="):
        ext.activation_ranges()


def test_load_vdna_from_hub_end_to_end(online, server, tmp_path):
    dna = make_dna("histogram-20", np.random.default_rng(3))
    dna.save(tmp_path / "made")
    for ext in (".json", ".npz"):
        server.add_hub_file("someone/dnas", f"ffhq/hist{ext}", (tmp_path / f"made{ext}").read_bytes(),
                            repo_type="dataset")
    got = load_vdna_from_hub("someone/dnas", "ffhq/hist")
    assert_same_data(got, dna)
    assert [r[1] for r in server.requests] == ["/datasets/someone/dnas/resolve/main/ffhq/hist.json"] * 2 + \
        ["/datasets/someone/dnas/resolve/main/ffhq/hist.npz"] * 2
    assert_same_data(load_vdna_from_hub("someone/dnas", "ffhq/hist.json"), dna)  # cache; extension accepted
    assert len(server.requests) == 4


def test_hub_without_huggingface_hub_says_how_to_install(online, server, monkeypatch):
    server.add_hub_file("o/r", "f.json", b"{}")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"pip install 'vdna\[hub\]'.*place it at"):
        fetch_hub_file("o/r", "f.json")
    assert server.requests == []


def test_hub_urls_and_cache_paths(online, monkeypatch):
    monkeypatch.delenv("HF_ENDPOINT")
    assert hub_file_url(RANGES_HUB_REPO, "Mugs/mugs_vit_base/activation_ranges.json") == \
        "https://huggingface.co/bramtoula/visual-dna-models/resolve/main/Mugs/mugs_vit_base/activation_ranges.json"
    assert hub_file_url("o/r", "a b/c.json", repo_type="dataset") == \
        "https://huggingface.co/datasets/o/r/resolve/main/a%20b/c.json"
    assert hub_cache_path("o/r", "x/y.npz", "dataset") == online / "hub" / "dataset" / "o" / "r" / "x" / "y.npz"
    for bad_repo in ("noslash", "a/b/c", "../x", "a/"):
        with pytest.raises(ValueError, match="owner/name"):
            hub_file_url(bad_repo, "f.json")
    for bad_path in ("/abs.json", "a/../b.json", ""):
        with pytest.raises(ValueError, match="relative path"):
            hub_cache_path("o/r", bad_path)
    with pytest.raises(ValueError, match="repo_type"):
        hub_file_url("o/r", "f.json", repo_type="bucket")
