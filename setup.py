"""Build the C core and the ``vdna._core`` extension (no torch needed)."""
import glob
import os
import sys

if sys.platform == "win32":
    # The core uses POSIX threads and GCC/clang builtins, and the build uses Unix linker options;
    # MSVC accepts neither. Say so instead of failing in the compiler.
    raise SystemExit(
        "vdna's C core needs a POSIX system (Linux or macOS) and GCC or clang; it does not build with "
        "MSVC. On Windows, install and use vdna inside WSL (Windows Subsystem for Linux)."
    )

import numpy as np  # noqa: E402  (after the platform check)
from setuptools import Extension, setup
from setuptools.command.build_py import build_py

try:
    import scipy_openblas32 as _blas
except ImportError as exc:  # pragma: no cover - pip installs it from build-system.requires
    raise SystemExit("building vdna needs the 'scipy-openblas32' package (BLAS/LAPACK): " + str(exc))

HERE = os.path.dirname(os.path.abspath(__file__))


def _rel(pattern):
    return sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, pattern)))


core_sources = _rel("csrc/core/*.c")
binding_sources = _rel("csrc/python/*.c")

# How the extension finds libscipy_openblas: vdna/_native.py loads it from the installed
# scipy_openblas32 package before importing the extension, so the already-loaded library is used in
# every install mode. The rpath is only a fallback, for a regular install in site-packages
# (vdna/_core*.so next to scipy_openblas32/lib): $ORIGIN on Linux, @loader_path on macOS (where
# setuptools' runtime_library_dirs does not emit an rpath, hence the linker option).
if sys.platform == "darwin":
    rpath = {"extra_link_args": ["-pthread", "-Wl,-rpath,@loader_path/../scipy_openblas32/lib"]}
else:
    rpath = {"extra_link_args": ["-pthread"], "runtime_library_dirs": ["$ORIGIN/../scipy_openblas32/lib"]}

ext = Extension(
    "vdna._core",
    sources=core_sources + binding_sources,
    include_dirs=["csrc/core", np.get_include(), _blas.get_include_dir()],
    library_dirs=[_blas.get_lib_dir()],
    libraries=[_blas.get_library(), "m"],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"), ("VDNA_BLAS_SCIPY_OPENBLAS", "1")],
    # $CFLAGS (setuptools adds it) may add more, e.g. -Werror in CI
    extra_compile_args=["-std=c11", "-O3", "-Wall", "-Wextra", "-ffp-contract=off", "-pthread"],
    **rpath,
)

class build_py_with_shim(build_py):
    """Ship the LibTorch shim's C++ source inside the package (vdna/csrc/torch): it is compiled on
    first use against the torch that is imported (vdna/backends/build.py)."""

    def run(self):
        super().run()
        dest_root = os.path.join(self.build_lib, "vdna", "csrc", "torch")
        for rel in _rel("csrc/torch/*.h") + _rel("csrc/torch/*.cpp") + _rel("csrc/torch/examples/*"):
            dest = os.path.join(dest_root, os.path.relpath(rel, os.path.join("csrc", "torch")))
            self.mkpath(os.path.dirname(dest))
            self.copy_file(os.path.join(HERE, rel), dest)


setup(ext_modules=[ext], cmdclass={"build_py": build_py_with_shim})
