"""Hostile image sources (FIFOs, archive members with ".."), ImageReadError as an OSError, and `vdna`
command messages that say what is wrong with which file (never an internal exception name)."""
import io
import json
import os
import random
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image

import tiny_extractor  # noqa: F401  (registers "tiny")
import vdna
from vdna.cli import main
from vdna.sources import ImageReadError, SkippedImageWarning, open_source

from dna_factory import make_dna

TINY = ["--import", "tiny_extractor", "--extractor", "tiny", "--backend", "eager", "-q", "--workers", "1",
        "--batch-size", "4"]
INTERNAL_NAMES = ("RecursionError", "TokenError", "OverflowError", "MemoryError", "SyntaxError", "KeyError",
                  "TypeError", "AttributeError", "IndexError", "BadZipFile", "UnidentifiedImageError",
                  "must be an iterable", "Traceback")
needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes (POSIX)")


def _png_bytes(seed):
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _folder_with_fifo(root):
    root.mkdir()
    for k in range(3):
        (root / f"img{k}.png").write_bytes(_png_bytes(k))
    os.mkfifo(root / "pipe.png")  # reading it would block for ever
    return root


@needs_fifo
def test_fifo_in_a_folder_is_skipped_and_listed(tmp_path):
    folder = _folder_with_fifo(tmp_path / "imgs")
    with pytest.warns(SkippedImageWarning, match=r"pipe\.png.*FIFO"):
        src = open_source(str(folder))
    assert [os.path.basename(n) for n in src.names] == ["img0.png", "img1.png", "img2.png"]
    assert src.skipped == [(str(folder / "pipe.png"), "a FIFO (named pipe), not an image file")]
    with pytest.warns(SkippedImageWarning):
        assert open_source(str(folder), num_images=2).skipped == src.skipped  # kept by a selection


@needs_fifo
def test_fifo_named_explicitly_is_refused_and_never_opened(tmp_path):
    folder = _folder_with_fifo(tmp_path / "imgs")
    fifo = str(folder / "pipe.png")
    with pytest.raises(ValueError, match=r"pipe\.png.*FIFO"):
        open_source(fifo)
    with pytest.raises(ValueError, match=r"source item \[1\].*pipe\.png.*FIFO"):
        open_source([str(folder / "img0.png"), fifo])
    # a file replaced by a FIFO after listing: reading it fails at once, as an OSError naming it
    src = open_source([str(folder / "img0.png"), str(folder / "img1.png")])
    os.unlink(folder / "img1.png")
    os.mkfifo(folder / "img1.png")
    with pytest.raises(ImageReadError, match=r"img1\.png.*FIFO") as info:
        src.read(1)
    assert isinstance(info.value, OSError)


@needs_fifo
def test_make_with_a_fifo_records_it_as_skipped(tmp_path, capsys):
    folder = _folder_with_fifo(tmp_path / "imgs")
    code = main(["make", str(folder), "-o", str(tmp_path / "d"), "--distribution", "gaussian", *TINY])
    _, err = capsys.readouterr()
    assert code == 0 and "pipe.png" in err
    d = vdna.load_vdna_from_files(tmp_path / "d")
    assert d.num_images == 3
    assert d.meta["skipped_files"] == [{"name": str(folder / "pipe.png"),
                                        "reason": "a FIFO (named pipe), not an image file"}]


def test_zip_members_with_dotdot_are_listed_as_skipped(tmp_path):
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ok/one.png", _png_bytes(1))
        zf.writestr("../evil.png", _png_bytes(2))
        zf.writestr("ok/../../evil2.png", _png_bytes(3))
        zf.writestr("/abs.png", _png_bytes(4))
        zf.writestr("sub\\..\\..\\win.png", _png_bytes(5))
        zf.writestr(".hidden.png", _png_bytes(6))  # hidden: silently ignored, as before
    with pytest.warns(SkippedImageWarning) as caught:
        src = open_source(str(path))
    assert len(caught) == 4 and any("../evil.png" in str(w.message) for w in caught)
    assert src.names == [f"{path}:ok/one.png"]
    assert sorted(name.split(":", 1)[1] for name, _ in src.skipped) == \
        ["../evil.png", "/abs.png", "ok/../../evil2.png", "sub\\..\\..\\win.png"]
    assert all("unsafe member path" in reason for _, reason in src.skipped)


def test_tar_members_dot_slash_kept_dotdot_and_links_skipped(tmp_path):
    path = tmp_path / "s.tar"
    with tarfile.open(path, "w") as tf:
        for name, data in (("./a.png", _png_bytes(1)), ("b.png", _png_bytes(2)), ("../c.png", _png_bytes(3))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("l.png")
        link.type = tarfile.SYMTYPE
        link.linkname = "b.png"
        tf.addfile(link)
    with pytest.warns(SkippedImageWarning):
        src = open_source(str(path))
    # "./a.png" (tar -cf x.tar . writes such names) is an image, not a hidden file
    assert src.names == [f"{path}:./a.png", f"{path}:b.png"]
    assert [(n.split(":", 1)[1], r.split(":")[0]) for n, r in src.skipped] == [
        ("../c.png", "unsafe member path ('..' or absolute)"),
        ("l.png", "not a regular file in the archive (a link or device)")]
    assert src.read(0).size == (32, 32)


def test_image_read_error_is_an_oserror_with_a_plain_message(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    src = open_source([str(tmp_path / "bad.png")])
    with pytest.raises(OSError) as info:
        src.read(0)
    assert isinstance(info.value, ImageReadError)
    message = str(info.value)
    assert "bad.png" in message and not any(name in message for name in INTERNAL_NAMES), message


# ------------------------------------------------------------------------------ command messages
def _error_line(err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, repr(err)
    return lines[0]


def _hostile_pairs(tmp_path):
    """(base path, what is wrong) of hostile DNA pairs the issue reported."""
    rng = np.random.default_rng(3)
    out = []

    def pair(name, kind, change_json=None, npz_bytes=None):
        base = tmp_path / name
        make_dna(kind, rng).save(base)
        meta = json.loads((tmp_path / f"{name}.json").read_text())
        if change_json is not None:
            meta = change_json(meta)
        (tmp_path / f"{name}.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
        if npz_bytes is not None:
            (tmp_path / f"{name}.npz").write_bytes(npz_bytes(open(f"{base}.npz", "rb").read()))
        out.append(base)

    def unchecked(meta):
        meta["vdna"].pop("npz_sha256")
        return meta

    pair("deep", "gaussian", lambda m: "[" * 100_000)
    pair("bigcount", "histogram-7", lambda m: dict(m, num_images=2 ** 64))
    pair("nancounts", "histogram-7", lambda m: dict(m, vdna=dict(m["vdna"], nan_counts=[3])))
    pair("noneskipped", "histogram-7", lambda m: dict(m, vdna=dict(m["vdna"], skipped_files=7)))
    def broken_header(npz):
        with zipfile.ZipFile(io.BytesIO(npz)) as zf:
            members = {name: zf.read(name) for name in zf.namelist()}
        first = next(iter(members))
        members[first] = members[first].replace(b"'descr'", b"'de\x01cr'")
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as zf:
            for name, data in members.items():
                zf.writestr(name, data)
        return out.getvalue()

    pair("header", "gaussian", unchecked, broken_header)
    pair("badsettings", "gaussian", lambda m: dict(m, data_settings=[1, 2]))
    pair("hugename", "histogram-7", lambda m: dict(m, name="histogram-" + "9" * 5000))
    return out


def test_command_errors_name_the_file_and_never_an_internal_exception(tmp_path, capsys):
    for base in _hostile_pairs(tmp_path):
        for command in (["inspect", str(base)], ["merge", str(base), str(base), "-o", str(tmp_path / "m")]):
            code = main(command)
            _, err = capsys.readouterr()
            line = _error_line(err)
            assert code == 1 and line.startswith(f"vdna {command[0]}: error:"), line
            assert base.name in line, line
            assert not any(name in line for name in INTERNAL_NAMES), line


def test_command_errors_on_mutated_files(tmp_path, capsys):
    """`vdna inspect` on 60 randomly mutated pairs: it works or prints one line naming the file."""
    base = tmp_path / "orig"
    make_dna("layer-gaussian", np.random.default_rng(1)).save(base)
    text, npz = (tmp_path / "orig.json").read_bytes(), (tmp_path / "orig.npz").read_bytes()
    meta = json.loads(text)
    meta["vdna"].pop("npz_sha256")
    plain = json.dumps(meta).encode()
    rnd = random.Random(11)
    for i in range(60):
        j, n = (text, npz) if i % 2 else (plain, npz)
        data = bytearray(j if i % 3 == 0 else n)
        for _ in range(rnd.randint(1, 4)):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        j, n = (bytes(data), n) if i % 3 == 0 else (j, bytes(data))
        (tmp_path / f"f{i}.json").write_bytes(j)
        (tmp_path / f"f{i}.npz").write_bytes(n)
        code = main(["inspect", str(tmp_path / f"f{i}")])
        _, err = capsys.readouterr()
        if code == 0:
            continue
        line = _error_line(err)
        assert f"f{i}." in line and not any(name in line for name in INTERNAL_NAMES), line


@pytest.mark.parametrize("exc, expected", [
    (RecursionError("maximum recursion depth exceeded"), "nested too deeply"),
    (MemoryError(), "not enough memory"),
    (OverflowError("int too large to convert"), "int too large to convert"),
    (TypeError("Value after * must be an iterable, not NoneType"), "Value after *"),
])
def test_unexpected_exceptions_are_explained_without_their_class_name(exc, expected):
    from vdna.cli import _explain

    line = _explain(exc, debug=False)
    assert expected in line and type(exc).__name__ not in line and "--debug" in line
