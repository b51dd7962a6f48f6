"""The guides' code runs as written: docs/custom_extractor.md's code blocks, in order, in a fresh folder.

Python blocks whose first line is ``# NAME.py`` are files of the guide: they are written to NAME.py and
also imported by the blocks after them. The other Python blocks run one after the other in one namespace,
like an interactive session. Every line of a ``bash`` block is a ``vdna`` command, run in a subprocess.
"""
import importlib
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import vdna
from vdna.procedural import write_image_set

DOCS = Path(__file__).resolve().parent.parent / "docs"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
FILE_HEADER = re.compile(r"#\s*([\w.]+\.py)\s*$")


def code_blocks(path: Path):
    """[(language, code), ...] of the fenced blocks of a Markdown file, in order."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(path.read_text(encoding="utf-8"))]


def test_code_blocks_are_found():
    blocks = code_blocks(DOCS / "custom_extractor.md")
    languages = [lang for lang, _ in blocks]
    assert set(languages) == {"python", "bash"}, languages  # an unlabelled block would go untested
    assert languages.count("python") >= 4
    assert FILE_HEADER.match(blocks[0][1].splitlines()[0])


@pytest.fixture
def guide_folder(tmp_path, monkeypatch):
    """The folder the guide assumes: three small image folders; the guide's modules importable from it."""
    for name, style, seed in (("calib", "base", 1), ("train", "base", 0), ("test", "shifted", 0)):
        write_image_set(tmp_path / name, 4, seed=seed, style=style, size=(48, 48))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:  # the guide's own modules must not leak into other tests
        if name.startswith("my_"):
            del sys.modules[name]


def run_vdna_command(line: str, cwd: Path) -> subprocess.CompletedProcess:
    args = shlex.split(line, comments=True)
    assert args[0] == "vdna", f"bash blocks of the guides hold vdna commands only, got: {line}"
    env = dict(os.environ)
    package_root = str(Path(vdna.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([package_root, env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "vdna", *args[1:]], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_custom_extractor_guide_runs(guide_folder, capsys):
    namespace = {"__name__": "__guide__"}
    for i, (language, code) in enumerate(code_blocks(DOCS / "custom_extractor.md")):
        where = f"docs/custom_extractor.md, code block {i + 1} ({language})"
        if language == "python":
            header = FILE_HEADER.match(code.splitlines()[0])
            if header:
                (guide_folder / header.group(1)).write_text(code, encoding="utf-8")
                importlib.invalidate_caches()  # a new file in a folder already on sys.path
                continue
            try:
                exec(compile(code, where, "exec"), namespace)
            except Exception as exc:
                raise AssertionError(f"{where} failed: {type(exc).__name__}: {exc}") from exc
        else:
            for line in code.splitlines():
                if line.strip():
                    p = run_vdna_command(line, guide_folder)
                    assert p.returncode == 0, f"{where}: `{line}` failed:\n{p.stderr}"
    out = capsys.readouterr().out
    assert "EMD over all neurons:" in out and "NFD:" in out
    # the guide's claims hold: the DNAs it made exist and differ between the two image sets
    assert (guide_folder / "small_net_ranges.json").is_file()
    train = vdna.load_vdna_from_files(guide_folder / "dnas" / "train")
    test = vdna.load_vdna_from_files(guide_folder / "dnas" / "test")
    assert (train.feature_extractor_name, train.hist_nb_bins, train.num_images) == ("small_net", 1000, 4)
    assert float(vdna.EMD(train, test)) > 0.0
