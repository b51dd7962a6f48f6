"""Resumable runs: make_vdna(checkpoint=...) interrupted (by an exception in-process, or by SIGKILL of a
child process at several points) and rerun gives exactly the DNA of an uninterrupted run; a checkpoint of
another run is refused naming the difference; checkpoint files are validated like DNA files."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tiny_extractor  # noqa: F401  (registers "tiny")
import vdna
from vdna import VDNAProcessor, load_vdna_from_files, procedural
from vdna.checkpoint import load_checkpoint, save_checkpoint

HERE = os.path.dirname(os.path.abspath(__file__))
KW = dict(feat_extractor_name="tiny", device="cpu", backend="eager", verbose=False, batch_size=3, num_workers=0)
N_IMAGES = 23


@pytest.fixture(scope="module")
def proc():
    return VDNAProcessor()


@pytest.fixture(scope="module")
def images():
    return procedural.make_images(N_IMAGES, seed=5, style="base", size=(40, 48))


@pytest.fixture(scope="module")
def tiny_ranges(proc, images):
    return proc.make_vdna(images, distribution_name="activation-ranges", **KW)


_REFS = {}


def reference(proc, images, distribution, ranges):
    """The uninterrupted run's DNA (computed once per distribution)."""
    if distribution not in _REFS:
        _REFS[distribution] = proc.make_vdna(images, **kwargs(distribution, ranges))
    return _REFS[distribution]


def kwargs(distribution, ranges):
    return dict(KW, distribution_name=distribution,
                activation_ranges=ranges if distribution.startswith("histogram") else None)


EPS = np.finfo(np.float64).eps


def assert_same_dna(a, b):
    assert a.num_images == b.num_images and a.type == b.type
    for layer in a.data:
        x, y = a.data[layer], b.data[layer]
        if a.type == "layer-gaussian":
            # The covariance accumulator sums deviations about a shift (its first image); a state holds
            # (count, mean, M2), so a resumed run continues about the rounded mean instead: each of the
            # n per-image terms may round differently, by <= eps * (|mu| + spread)^2 (sigma) or
            # eps * (|mu| + spread) (mu) each.
            scale = np.max(np.abs(x["mu"])) + np.sqrt(np.max(np.diag(x["sigma"])))
            np.testing.assert_allclose(x["mu"], y["mu"], rtol=0, atol=4 * a.num_images * EPS * scale)
            np.testing.assert_allclose(x["sigma"], y["sigma"], rtol=0, atol=4 * a.num_images * EPS * scale**2)
        elif isinstance(x, dict):
            for k in x:
                np.testing.assert_array_equal(x[k], y[k])  # bit-identical
        else:
            np.testing.assert_array_equal(x, y)
    assert a.meta["nan_counts"] == b.meta["nan_counts"]
    assert a.meta.get("skipped_files", []) == b.meta.get("skipped_files", [])


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("distribution", ["histogram-16", "gaussian", "layer-gaussian", "activation-ranges"])
@pytest.mark.parametrize("stop_after_batches", [1, 2, 5])
def test_interrupted_and_resumed_run_equals_uninterrupted(proc, images, tiny_ranges, tmp_path, monkeypatch,
                                                          distribution, stop_after_batches):
    kw = kwargs(distribution, tiny_ranges)
    ref = reference(proc, images, distribution, tiny_ranges)
    ck = tmp_path / "run.ckpt"
    from vdna.processor import VDNAStream

    forward, calls = VDNAStream._forward, []

    def failing_forward(self, batch):
        calls.append(len(batch))
        if len(calls) > stop_after_batches:
            raise Interrupt()
        forward(self, batch)

    monkeypatch.setattr(VDNAStream, "_forward", failing_forward)
    with pytest.raises(Interrupt):
        proc.make_vdna(images, checkpoint=ck, checkpoint_every=4, **kw)
    monkeypatch.setattr(VDNAStream, "_forward", forward)
    if stop_after_batches < 2:
        assert not ck.exists()  # killed before the first checkpoint: the rerun starts afresh
    else:
        _, progress, _ = load_checkpoint(ck)
        # checkpoints are taken at batch ends once >= 4 images were read since the last one
        assert progress["next_position"] == (stop_after_batches // 2) * 6 and not progress["complete"]
    resumed = proc.make_vdna(images, checkpoint=ck, checkpoint_every=4, **kw)
    assert_same_dna(ref, resumed)
    assert load_checkpoint(ck)[1]["complete"]
    assert_same_dna(ref, proc.make_vdna(images, checkpoint=ck, checkpoint_every=4, **kw))  # complete: reused


def test_resume_is_refused_for_another_run_naming_the_difference(proc, images, tiny_ranges, tmp_path):
    kw = kwargs("histogram-16", tiny_ranges)
    ck = tmp_path / "c"
    proc.make_vdna(images[:10], checkpoint=ck, checkpoint_every=4, **kw)
    with pytest.raises(ValueError, match="seed: checkpoint has 0, this run has 1"):
        proc.make_vdna(images[:10], checkpoint=ck, seed=1, **kw)
    with pytest.raises(ValueError, match="distribution_name: checkpoint has 'histogram-16', this run has 'gaussian'"):
        proc.make_vdna(images[:10], checkpoint=ck, **kwargs("gaussian", None))
    with pytest.raises(ValueError, match="source_images: checkpoint has 10, this run has 11"):
        proc.make_vdna(images[:11], checkpoint=ck, **kw)
    with pytest.raises(ValueError, match="checkpoint_every must be a positive integer"):
        proc.make_vdna(images[:10], checkpoint=tmp_path / "d", checkpoint_every=0, **kw)


def test_checkpoint_files_are_validated(tmp_path, proc, images, tiny_ranges):
    ck = tmp_path / "c"
    proc.make_vdna(images[:6], checkpoint=ck, **kwargs("gaussian", None))
    identity, progress, state = load_checkpoint(ck)
    (tmp_path / "junk").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "junk")
    np.savez(tmp_path / "noheader.npz", a0=np.zeros(3))
    with pytest.raises(ValueError, match="no header"):
        load_checkpoint(tmp_path / "noheader.npz")
    bad = dict(progress, next_position=progress["stop"] + 1)
    save_checkpoint(tmp_path / "bad", identity, bad, state)
    with pytest.raises(ValueError, match="outside"):
        load_checkpoint(tmp_path / "bad")
    # an object array (a pickle) in place of a state array is never unpickled: it is missing
    np.savez(tmp_path / "pickled.npz", header=np.frombuffer(b'{"format": "vdna.checkpoint", "version": 1, '
             b'"identity": {}, "progress": {}, "state": {"x": {"__array__": "a0"}}}', dtype=np.uint8),
             a0=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(ValueError, match="missing or used twice"):
        load_checkpoint(tmp_path / "pickled.npz")
    # a corrupt state inside a well-formed checkpoint is refused by load_state_dict
    layer = next(iter(state["layers"]))
    state["layers"][layer]["mean"] = state["layers"][layer]["mean"][:-1]
    save_checkpoint(ck, identity, progress, state)
    with pytest.raises(ValueError, match=f"layer '{layer}': 'mean' has shape"):
        proc.make_vdna(images[:6], checkpoint=ck, **kwargs("gaussian", None))


CHILD = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {here!r})
    import numpy as np
    import tiny_extractor
    import vdna.checkpoint as ckm
    from vdna import VDNAProcessor, procedural
    from vdna.processor import VDNAStream
    mode, k, ck, out, ranges = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    saves, batches = [0], [0]
    save, forward = ckm.save_checkpoint, VDNAStream._forward
    def killing_save(*a, **kw):
        saves[0] += 1
        if mode == "mid-save" and saves[0] == k:  # die with a half-written temporary on disk
            with open(ckm.__dict__["write_bytes_atomic"].__globals__["temporary_path"](ck), "wb") as f:
                f.write(b"PK partial")
            os.kill(os.getpid(), signal.SIGKILL)
        save(*a, **kw)
        if mode == "after-save" and saves[0] == k:
            os.kill(os.getpid(), signal.SIGKILL)
    def killing_forward(self, batch):
        batches[0] += 1
        if mode == "mid-batch" and batches[0] == k:
            os.kill(os.getpid(), signal.SIGKILL)
        forward(self, batch)
    ckm.save_checkpoint, VDNAStream._forward = killing_save, killing_forward
    images = procedural.make_images({n}, seed=5, style="base", size=(40, 48))
    v = VDNAProcessor().make_vdna(images, feat_extractor_name="tiny", device="cpu", backend="eager", verbose=False,
                                  batch_size=3, num_workers=0, distribution_name="histogram-16",
                                  activation_ranges=ranges, checkpoint=ck, checkpoint_every=4)
    v.save(out)
""")


def test_sigkilled_child_resumes_to_the_uninterrupted_dna(proc, images, tiny_ranges, tmp_path):
    """One run SIGKILLed three times (right after a checkpoint, in the middle of writing one, between
    two checkpoints), each time resumed from the checkpoint on disk; the last resume finishes with the
    uninterrupted run's DNA (bit-identical counts). One chain keeps the test to four process starts."""
    ranges = tmp_path / "ranges.json"
    ranges.write_text(json.dumps(vdna.ActivationRanges.from_any(tiny_ranges).to_reference_json()))
    ref = reference(proc, images, "histogram-16", tiny_ranges)
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(here=HERE, n=N_IMAGES))
    ck, out = tmp_path / "run.ckpt", tmp_path / "dna"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    positions = []
    # checkpoints every 4 images in batches of 3: at positions 6, 12, 18 (and 23 at the end)
    for mode, k in [("after-save", 1), ("mid-save", 2), ("mid-batch", 2), ("none", 0)]:
        run = subprocess.run([sys.executable, str(script), mode, str(k), str(ck), str(out), str(ranges)], env=env,
                             capture_output=True, text=True, timeout=120)
        if mode == "none":
            assert run.returncode == 0, run.stderr
        else:
            assert run.returncode == -signal.SIGKILL, run.stderr
            assert not (tmp_path / "dna.json").exists()
        positions.append(load_checkpoint(ck)[1]["next_position"])
    # after-save at the 1st save: 6; mid-save of the resumed run's 2nd save (18): still 12;
    # mid-batch at the next run's 2nd batch (positions 15..17): still 12; then complete.
    assert positions == [6, 12, 12, N_IMAGES]
    assert_same_dna(ref, load_vdna_from_files(out))
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]  # the killed writer's temporary is gone


def test_vdna_make_checkpoint_option(tmp_path, capsys):
    from vdna.cli import main

    folder = procedural.write_image_set(tmp_path / "imgs", 7, seed=2, style="base", size=(40, 48))
    common = ["make", str(folder), "--extractor", "tiny", "--backend", "eager", "--device", "cpu", "-q",
              "--workers", "0", "--batch-size", "2", "--distribution", "gaussian"]
    assert main([*common, "-o", str(tmp_path / "plain")]) == 0
    ck = tmp_path / "make.ckpt"
    assert main([*common, "-o", str(tmp_path / "ck"), "--checkpoint", str(ck), "--checkpoint-every", "2"]) == 0
    assert load_checkpoint(ck)[1]["complete"]
    assert_same_dna(load_vdna_from_files(tmp_path / "plain"), load_vdna_from_files(tmp_path / "ck"))
    capsys.readouterr()
    assert main([*common, "-o", str(tmp_path / "other"), "--checkpoint", str(ck), "--seed", "4"]) == 1
    assert "seed: checkpoint has 0, this run has 4" in capsys.readouterr().err
