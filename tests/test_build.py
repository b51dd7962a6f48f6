"""The build's own rules (docs/building.md): one version number, Windows refused with a message, the
shim's link options per platform."""
import importlib.metadata
import re
import runpy
import sys
from pathlib import Path

import pytest

import vdna
from vdna.backends import build as build_mod

ROOT = Path(__file__).resolve().parent.parent


def test_version_is_written_once():
    """pyproject.toml takes the version from vdna/version.py; nothing else in the sources spells it."""
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    project = re.search(r"^\[project\]\n(.*?)^\[", pyproject, re.MULTILINE | re.DOTALL).group(1)
    assert re.search(r'^dynamic\s*=\s*\[\s*"version"\s*\]', project, re.MULTILINE)
    assert not re.search(r"^version\s*=", project, re.MULTILINE)
    assert 'version = { attr = "vdna.version.__version__" }' in pyproject
    # the installed metadata (built from pyproject.toml) carries the same number
    assert importlib.metadata.version("vdna") == vdna.__version__
    hits = [p for p in list((ROOT / "vdna").rglob("*.py")) + list((ROOT / "csrc").rglob("*.[ch]")) + [ROOT / "setup.py"]
            if vdna.__version__ in p.read_text(encoding="utf-8", errors="replace")]
    assert hits == [ROOT / "vdna" / "version.py"], hits


def test_windows_install_stops_with_a_message(monkeypatch):
    """setup.py on Windows exits before compiling anything, saying that WSL is needed."""
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(sys, "argv", ["setup.py", "--version"])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(ROOT / "setup.py"), run_name="__main__")
    assert "WSL" in str(info.value) and "MSVC" in str(info.value)


@pytest.mark.parametrize("platform, gnu_ld", [("linux", True), ("darwin", False)])
def test_shim_link_options(monkeypatch, platform, gnu_ld):
    """The shim hides inline instantiations (clang++ exports them otherwise), appends $CXXFLAGS, and
    uses GNU ld's --as-needed switches only where the linker is GNU ld's kind (not on macOS)."""
    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.setenv("CXXFLAGS", "-Werror -DX='a b'")
    cfg = {"std": "-std=c++17", "cxx11_abi": 1, "include_dirs": ["/inc"], "lib_dir": "/lib", "libs": ["torch"]}
    cmd = build_mod._command(["c++"], cfg, Path("s.cpp"), Path("o.so"))
    assert "-fvisibility=hidden" in cmd and "-fvisibility-inlines-hidden" in cmd
    assert "-Wall" in cmd and cmd.index("-Wextra") < cmd.index("-Werror")  # $CXXFLAGS come after ours
    assert "-DX=a b" in cmd
    assert ("-Wl,--no-as-needed" in cmd) == gnu_ld and ("-Wl,--as-needed" in cmd) == gnu_ld
    assert "-Wl,-rpath,/lib" in cmd and "-ltorch" in cmd
