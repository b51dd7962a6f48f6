"""A save killed (SIGKILL) at any instant leaves the previous or the new DNA loadable, and the
temporaries of killed saves are removed by the next save.

A forked child saves; it is killed either exactly before or after each file-system call the save
makes (every open, fsync, link, rename and unlink: this includes the instant between the .json and
the .npz renames), or after a random delay while it saves in a loop.
"""
import os
import random
import signal
import time

import numpy as np
import pytest

import vdna
from vdna import atomic
from vdna import files as vfiles

from dna_factory import assert_same_data, make_dna

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")

_CALLS = ("open", "fsync", "link", "replace", "unlink")  # os.* calls of a save (os.open: fsync_dir)


def _dnas():
    rng = np.random.default_rng(7)
    old = make_dna("histogram-5", rng, num_images=3)
    new = make_dna("histogram-5", rng, num_images=4)
    return old, new


def _instrument(on_call):
    """Route the save's file-system calls through ``on_call(name, before)``: os.* and the built-in
    open as seen by vdna.files. Only ever done in a forked child (or undone by monkeypatch)."""
    def wrap(name, fn):
        def call(*args, **kwargs):
            on_call(name, True)
            result = fn(*args, **kwargs)
            on_call(name, False)
            return result
        return call

    for name in _CALLS:
        setattr(os, name, wrap(name, getattr(os, name)))
    vfiles.open = wrap("builtins.open", open)


def _count_calls(directory, monkeypatch, overwrite=True):
    """The file-system calls of one save (over a previous pair if ``overwrite``), in order."""
    old, new = _dnas()
    path = directory / "d"
    if overwrite:
        vfiles.save_vdna(old, str(path))
    seen = []
    for name in _CALLS:
        monkeypatch.setattr(os, name, getattr(os, name))  # restored by undo()
    monkeypatch.setattr(vfiles, "open", open, raising=False)  # removed by undo()
    _instrument(lambda name, before: seen.append((name, before)))
    vfiles.save_vdna(new, str(path))
    monkeypatch.undo()
    return seen


def _commit_point(seen):
    """The call number just after the JSON rename returned (the second of the save's renames)."""
    return [k for k, call in enumerate(seen, 1) if call == ("replace", False)][1]


def _kill_at(path, dna, point):
    """Fork a child that saves ``dna`` to ``path`` and kills itself at call number ``point``."""
    pid = os.fork()
    if pid == 0:
        try:
            count = [0]

            def on_call(name, before):
                count[0] += 1
                if count[0] == point:
                    os.kill(os.getpid(), signal.SIGKILL)

            _instrument(on_call)
            vfiles.save_vdna(dna, str(path))
        finally:
            os._exit(0)  # the save finished before the kill point (or failed): the parent checks
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def _assert_old_or_new(path, old, new):
    got = vfiles.load_vdna_from_files(str(path))
    which = old if got.num_images == old.num_images else new
    assert got.num_images == which.num_images
    assert_same_data(got, which)
    return which is new


def test_kill_before_and_after_every_file_system_call_of_a_save(tmp_path, monkeypatch):
    seen = _count_calls(tmp_path / "count", monkeypatch)
    assert [c for c in seen if c == ("replace", True)] == [("replace", True)] * 3  # npz, JSON, npz
    old, new = _dnas()
    path = tmp_path / "k" / "d"
    outcomes = []
    for point in range(1, len(seen) + 2):
        vfiles.save_vdna(old, str(path))  # a good old pair (this save also removes earlier leftovers)
        killed = _kill_at(path, new, point)
        assert killed == (point <= len(seen)), point
        outcomes.append(_assert_old_or_new(path, old, new))
    # the kills were real: early ones leave the old DNA, late ones the new; killed just before the
    # JSON rename the old one loads, just after it (the .npz not yet renamed) the new one loads from
    # the pending file that the JSON names
    commit = _commit_point(seen)
    assert outcomes[0] is False and outcomes[-1] is True
    assert outcomes[commit - 2] is False and outcomes[commit - 1] is True
    assert outcomes == sorted(outcomes)  # old ... old, new ... new

    vfiles.save_vdna(old, str(path))  # the next save cleans up what the killed ones left
    assert sorted(os.listdir(path.parent)) == ["d.json", "d.npz"]


def test_kill_between_the_renames_of_a_first_save(tmp_path, monkeypatch):
    seen = _count_calls(tmp_path / "count", monkeypatch, overwrite=False)
    old, new = _dnas()
    first = tmp_path / "first" / "d"  # nothing before: the JSON names the pending .npz
    assert _kill_at(first, new, _commit_point(seen))
    assert not (first.parent / "d.npz").exists()
    assert _assert_old_or_new(first, old, new)
    vfiles.save_vdna(new, str(first))
    assert sorted(os.listdir(first.parent)) == ["d.json", "d.npz"]


def test_random_kills_of_a_saving_loop(tmp_path):
    old, new = _dnas()
    path = tmp_path / "loop" / "d"
    vfiles.save_vdna(old, str(path))
    rnd = random.Random(3)
    for _ in range(25):
        pid = os.fork()
        if pid == 0:
            try:
                while True:
                    vfiles.save_vdna(new, str(path))
                    vfiles.save_vdna(old, str(path))
            finally:
                os._exit(1)
        time.sleep(rnd.uniform(0.0, 0.03))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        _assert_old_or_new(path, old, new)
    vfiles.save_vdna(old, str(path))
    assert sorted(os.listdir(path.parent)) == ["d.json", "d.npz"]
    assert atomic.remove_stale_temporaries(path.parent) == []
