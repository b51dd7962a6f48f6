"""vdna.atomic: a failed or killed write leaves the previous file, temporaries are ours and cleaned."""
import os
import re
import signal

import pytest

from vdna import atomic


def _hidden(directory):
    return sorted(p for p in os.listdir(directory) if p.startswith("."))


def test_temporary_path_is_a_hidden_unique_sibling(tmp_path):
    target = tmp_path / "sub" / "x.json"
    a, b = atomic.temporary_path(target), atomic.temporary_path(target)
    assert a != b
    assert os.path.dirname(a) == str(tmp_path / "sub")  # same directory, so the rename is atomic
    name = os.path.basename(a)
    assert re.fullmatch(rf"\.x\.json\.{os.getpid()}-[0-9a-f]{{16}}\.tmp", name)
    assert atomic.temporary_target(name) == "x.json"
    assert atomic.temporary_target("x.json") is None
    assert atomic.temporary_target(".x.json.tmp") is None


@pytest.mark.parametrize("mode,payload", [("wb", b"new bytes"), ("w", "new text\n")])
def test_atomic_write_replaces_the_file(tmp_path, mode, payload):
    p = tmp_path / "f"
    p.write_bytes(b"old")
    with atomic.atomic_write(p, mode, **({"encoding": "utf-8", "newline": ""} if mode == "w" else {})) as f:
        f.write(payload)
        assert p.read_bytes() == b"old"  # nothing visible before the block ends
    assert p.read_bytes() == (payload if mode == "wb" else payload.encode())
    assert _hidden(tmp_path) == []


def test_failure_mid_write_keeps_the_old_file_and_no_temporary(tmp_path):
    p = tmp_path / "f.json"
    p.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic.atomic_write(p, "w", encoding="utf-8") as f:
            f.write("half of the new")
            raise RuntimeError("disk full")
    assert p.read_text() == "old"
    assert _hidden(tmp_path) == []


def test_failed_rename_keeps_the_old_file(tmp_path, monkeypatch):
    p = tmp_path / "f"
    p.write_bytes(b"old")

    def refuse(src, dst):
        raise PermissionError(13, "refused", dst)

    monkeypatch.setattr(atomic.os, "replace", refuse)
    with pytest.raises(PermissionError):
        atomic.write_bytes_atomic(p, b"new")
    monkeypatch.undo()
    assert p.read_bytes() == b"old"
    assert _hidden(tmp_path) == []


def test_write_helpers_and_atomic_path(tmp_path):
    atomic.write_bytes_atomic(tmp_path / "a" / "b.bin", b"\x00\x01")  # parents are created
    assert (tmp_path / "a" / "b.bin").read_bytes() == b"\x00\x01"
    atomic.write_text_atomic(tmp_path / "t.txt", "line\r\nline\n")  # no newline translation
    assert (tmp_path / "t.txt").read_bytes() == b"line\r\nline\n"
    with atomic.atomic_path(tmp_path / "c.out") as tmp:
        assert os.path.basename(tmp).startswith(".c.out.")
        with open(tmp, "wb") as f:
            f.write(b"made by a writer that needs a file name")
    assert (tmp_path / "c.out").read_bytes().startswith(b"made by")
    with pytest.raises(FileNotFoundError, match="nothing was written"):
        with atomic.atomic_path(tmp_path / "d.out"):
            pass
    assert not (tmp_path / "d.out").exists()
    with pytest.raises(ValueError, match="mode"):
        with atomic.atomic_write(tmp_path / "e", "a"):
            pass
    assert _hidden(tmp_path) == []


def _dead_pid():
    """The id of a process that has exited (a forked child, reaped)."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")
def test_killed_writer_leaves_a_temporary_that_is_cleaned(tmp_path):
    p = tmp_path / "f.json"
    p.write_text("old")
    pid = os.fork()
    if pid == 0:  # the child is killed in the middle of the write
        try:
            with atomic.atomic_write(p, "w", encoding="utf-8") as f:
                f.write("half")
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert p.read_text() == "old"
    left = _hidden(tmp_path)
    assert len(left) == 1 and atomic.temporary_target(left[0]) == "f.json"
    assert atomic.remove_stale_temporaries(tmp_path) == [tmp_path / left[0]]
    assert _hidden(tmp_path) == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")
def test_remove_stale_temporaries_only_touches_our_pattern_of_dead_writers(tmp_path):
    dead = _dead_pid()
    ours_dead = [f".a.json.{dead}-{'0' * 16}.tmp", f".b.npz.{dead}-{'ab' * 8}.tmp"]
    ours_alive = [f".a.json.{os.getpid()}-{'1' * 16}.tmp"]  # a writer that is still running
    if os.getppid() > 1:
        ours_alive.append(f".a.json.{os.getppid()}-{'2' * 16}.tmp")
    not_ours = [
        f".a.json.{dead}.tmp",  # no token
        f".a.json.{dead}-{'0' * 15}.tmp",  # short token
        f".a.json.{dead}-{'G' * 16}.tmp",  # not hex
        f"a.json.{dead}-{'0' * 16}.tmp",  # not hidden
        f".a.json.{dead}-{'0' * 16}.tmp.bak",
        ".gitignore", "a.json", "notes.tmp",
    ]
    for name in ours_dead + ours_alive + not_ours:
        (tmp_path / name).write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ours_dead[0]).write_text("x")  # not recursive

    removed = atomic.remove_stale_temporaries(tmp_path, "a.json")  # one target only
    assert removed == [tmp_path / ours_dead[0]]
    removed = atomic.remove_stale_temporaries(tmp_path, match=lambda target: target.endswith(".json"))
    assert removed == []
    removed = atomic.remove_stale_temporaries(tmp_path)
    assert removed == [tmp_path / ours_dead[1]]
    assert sorted(os.listdir(tmp_path)) == sorted(ours_alive + not_ours + ["sub"])
    assert (tmp_path / "sub" / ours_dead[0]).exists()
    assert atomic.remove_stale_temporaries(tmp_path / "missing") == []


def test_fsync_dir_tolerates_what_cannot_be_opened(tmp_path):
    atomic.fsync_dir(tmp_path)
    atomic.fsync_dir(tmp_path / "missing")  # no exception: a missing folder has nothing to sync
