"""Build the LibTorch shim (csrc/torch) against the torch that is imported, and cache it.

``pip install .`` needs no torch: the shim is compiled on first use (or by ``python -m
vdna.backends.build``) with the system C++ compiler ($CXX, else c++, g++ or clang++; $CXXFLAGS
are added, e.g. -Werror in CI), against the headers and libraries of the imported torch. The
result is cached under ``<cache>/shim/<key>/libvdna_shim.so`` where the key
hashes the torch version, CUDA version, C++ ABI flag, compiler, flags and the shim's source, so a
different torch or an edited source gets its own build. Builds run under a file lock and are moved
into place atomically, so concurrent processes build once and never load a half-written library.
No ``-fopenmp``: torch brings its own OpenMP runtime, and the shim needs none.
"""
import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

from ..download import cache_dir as _default_cache_dir
from ..atomic import atomic_path, write_text_atomic
from ._cache import file_lock

__all__ = ["ShimBuildError", "build_shim", "shim_library_path", "shim_source_dir", "main"]

LIBRARY_NAME = "libvdna_shim.so"
_SOURCES = ("vdna_shim.cpp", "vdna_shim.h")
_announced = False


class ShimBuildError(RuntimeError):
    """The shim cannot be built here (no torch, no compiler, or the compiler failed)."""


def shim_source_dir() -> Path:
    """The folder holding vdna_shim.cpp / vdna_shim.h.

    Installed packages carry it as package data (``vdna/csrc/torch``); a source checkout has it at
    ``<repo>/csrc/torch``.
    """
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "csrc" / "torch", package.parent / "csrc" / "torch"):
        if all((candidate / name).is_file() for name in _SOURCES):
            return candidate
    raise ShimBuildError(
        "the shim's C++ source (csrc/torch/vdna_shim.cpp) is not part of this installation; "
        "reinstall vdna from a complete source distribution"
    )


def _compiler() -> List[str]:
    cxx = os.environ.get("CXX", "").strip()
    candidates = [cxx] if cxx else ["c++", "g++", "clang++"]
    for name in candidates:
        parts = name.split()
        if parts and shutil.which(parts[0]):
            return parts
    raise ShimBuildError("no C++ compiler found (set CXX or install g++ / clang++)")


def _compiler_id(cxx: List[str]) -> str:
    try:
        out = subprocess.run(cxx + ["--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ShimBuildError(f"the C++ compiler {cxx[0]!r} does not run: {exc}") from exc
    first = (out.stdout or out.stderr).splitlines()[:1]
    return f"{shutil.which(cxx[0])} {first[0] if first else ''}".strip()


def _cxx_standard(cpp_extension) -> str:
    """The C++ standard torch's own extension builder uses (its headers require at least that)."""
    import inspect

    try:
        found = re.findall(r"-std=c\+\+(\d+)", inspect.getsource(cpp_extension))
    except (OSError, TypeError):
        found = []
    return "-std=c++" + (max(found, key=int) if found else "17")


def _torch_config():
    try:
        import torch
        import torch.utils.cpp_extension as cpp_extension
    except ImportError as exc:
        raise ShimBuildError(f"torch is not importable ({exc})") from exc
    lib_dirs = cpp_extension.library_paths()
    lib_dir = lib_dirs[0]
    libs = ["torch", "torch_cpu", "c10"]
    if os.path.exists(os.path.join(lib_dir, "libtorch_cuda.so")):
        libs.append("torch_cuda")  # loaded by the shim itself when no Python imported it
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "cxx11_abi": int(bool(torch._C._GLIBCXX_USE_CXX11_ABI)),
        "include_dirs": cpp_extension.include_paths(),
        "lib_dir": lib_dir,
        "libs": libs,
        "std": _cxx_standard(cpp_extension),
    }


def _source_hash(src: Path) -> str:
    h = hashlib.sha256()
    for name in _SOURCES:
        h.update(name.encode() + b"\0" + (src / name).read_bytes() + b"\0")
    return h.hexdigest()


def _extra_flags() -> List[str]:
    """$CXXFLAGS, appended to the compiler's flags (CI adds -Werror)."""
    return shlex.split(os.environ.get("CXXFLAGS", ""))


def _command(cxx, cfg, source: Path, output: Path) -> List[str]:
    # -fvisibility-inlines-hidden: clang++ otherwise exports two instantiations of LibTorch inline
    # functions besides our entry point (tests/test_shim.py checks the exports).
    cmd = list(cxx) + [cfg["std"], "-O2", "-fPIC", "-shared", "-fvisibility=hidden", "-fvisibility-inlines-hidden",
                       "-Wall", "-Wextra", f"-D_GLIBCXX_USE_CXX11_ABI={cfg['cxx11_abi']}"] + _extra_flags()
    for inc in cfg["include_dirs"]:
        cmd += ["-isystem", inc]
    # GNU ld drops libraries no symbol refers to (--as-needed): keep torch's (torch_cuda registers
    # the CUDA device). macOS's linker has no such option and keeps every library it is given.
    gnu_ld = sys.platform != "darwin"
    cmd += [str(source), "-o", str(output), "-L" + cfg["lib_dir"]] + (["-Wl,--no-as-needed"] if gnu_ld else [])
    cmd += ["-l" + lib for lib in cfg["libs"]]
    cmd += (["-Wl,--as-needed"] if gnu_ld else []) + ["-Wl,-rpath," + cfg["lib_dir"]]
    return cmd


def _plan(cache_dir: Optional[os.PathLike]):
    src = shim_source_dir()
    cfg = _torch_config()
    cxx = _compiler()
    key_fields = {
        "torch": cfg["torch"],
        "cuda": cfg["cuda"],
        "cxx11_abi": cfg["cxx11_abi"],
        "compiler": _compiler_id(cxx),
        "flags": _command(cxx, cfg, Path("SRC"), Path("OUT")),
        "source": _source_hash(src),
    }
    key = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:20]
    root = Path(cache_dir) if cache_dir is not None else _default_cache_dir() / "shim"
    return src, cfg, cxx, key_fields, root / key / LIBRARY_NAME


def shim_library_path(cache_dir: Optional[os.PathLike] = None) -> Path:
    """Where the shim for the imported torch lives (or will live) in the cache."""
    return _plan(cache_dir)[4]


def build_shim(cache_dir: Optional[os.PathLike] = None, force: bool = False, quiet: bool = False) -> Path:
    """Return the path of the shim built for the imported torch, compiling it first if needed.

    ``cache_dir`` defaults to ``$VDNA_HOME/shim`` (``~/.cache/vdna/shim``). ``force`` rebuilds even
    when a cached library exists. Prints one line to stderr when it compiles (unless ``quiet``).
    Raises ShimBuildError with the compiler's output when the build is impossible or fails.
    """
    global _announced
    src, cfg, cxx, key_fields, target = _plan(cache_dir)
    if target.is_file() and not force:
        return target
    with file_lock(target.with_name("build.lock")):
        if target.is_file() and not force:
            return target  # another process built it while we waited
        if not quiet and not _announced:
            print(f"vdna: building the LibTorch shim for torch {cfg['torch']} (once, about a minute) "
                  f"into {target.parent}", file=sys.stderr, flush=True)
            _announced = True
        with atomic_path(target, durable=False) as tmp:
            cmd = _command(cxx, cfg, src / "vdna_shim.cpp", Path(tmp))
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True)
            except OSError as exc:
                raise ShimBuildError(f"the C++ compiler could not be started: {exc}") from exc
            if proc.returncode != 0 or not os.path.isfile(tmp):
                tail = "\n".join((proc.stderr or proc.stdout).splitlines()[-25:])
                raise ShimBuildError(f"compiling the shim failed (exit {proc.returncode}):\n"
                                     f"{' '.join(cmd)}\n{tail}")
        write_text_atomic(target.with_name("build.json"), json.dumps(dict(key_fields, command=cmd), indent=2),
                          durable=False)
    return target


def main(argv=None) -> int:
    """``python -m vdna.backends.build``: prebuild the shim and print its path."""
    parser = argparse.ArgumentParser(prog="python -m vdna.backends.build", description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=None, help="folder for the built shim (default: $VDNA_HOME/shim)")
    parser.add_argument("--force", action="store_true", help="rebuild even if a cached build exists")
    args = parser.parse_args(argv)
    try:
        path = build_shim(args.cache_dir, force=args.force)
    except ShimBuildError as exc:
        print(f"vdna: cannot build the LibTorch shim: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
