"""The quick examples run as a user would run them (``python examples/NAME.py``), offline."""
import os
import re
import subprocess
import sys
from pathlib import Path

import vdna

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name, *args, cwd):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(vdna.__file__).resolve().parent.parent), env.get("PYTHONPATH", "")])
    p = subprocess.run([sys.executable, str(EXAMPLES / name), *map(str, args)], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return p.stdout


def numbers(text, label):
    return [float(x) for x in re.findall(re.escape(label) + r"\s*:?\s*([0-9.]+)", text)]


def test_numpy_accumulator(tmp_path):
    out = run_example("numpy_accumulator.py", "--save", tmp_path / "dna", cwd=tmp_path)
    same, = numbers(out, "EMD same distribution")
    shifted, = numbers(out, "shifted")[:1]
    assert 0 < same < shifted
    v = vdna.load_vdna_from_files(tmp_path / "dna")
    assert v.feature_extractor_name == "my_jax_model" and v.num_images == 50
    assert dict(v.neurons_list) == {"conv": 8, "tokens": 16}


def test_custom_extractor(tmp_path):
    out = run_example("custom_extractor.py", cwd=tmp_path)
    total, = numbers(out, "EMD(base, shifted) with small_convnet")
    assert total > 0 and "block1" in out and "block2" in out


def test_compare_folders(tmp_path):
    out = run_example("compare_folders.py", cwd=tmp_path)
    total = float(re.search(r"EMD between .* and .*: ([0-9.]+) bins", out).group(1))
    assert total > 0 and "layer4_2" in out


def test_rank_images(tmp_path):
    out = run_example("rank_images.py", "--out", tmp_path / "r.csv", "--grid", tmp_path / "g.png", cwd=tmp_path)
    scores = [float(x) for x in re.findall(r"^\s+\d+\s+([0-9.]+)\s", out, flags=re.M)]
    assert len(scores) == 6 and scores == sorted(scores)
    assert len((tmp_path / "r.csv").read_text().splitlines()) == 7
    assert (tmp_path / "g.png").stat().st_size > 5000


def test_fid_example_explains_missing_weights(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(vdna.__file__).resolve().parent.parent)
    p = subprocess.run([sys.executable, str(EXAMPLES / "fid_inception.py"), str(tmp_path / "none.pth"), "a", "b"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    assert "weights not found" in p.stderr and "pytorch-fid" in p.stderr
