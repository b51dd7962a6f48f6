"""Build the C core and the ``vdna._core`` extension (no torch needed)."""
import glob
import os

import numpy as np
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

ext = Extension(
    "vdna._core",
    sources=core_sources + binding_sources,
    include_dirs=["csrc/core", np.get_include(), _blas.get_include_dir()],
    library_dirs=[_blas.get_lib_dir()],
    libraries=[_blas.get_library(), "m"],
    # vdna/_native.py preloads the library from the installed scipy_openblas32 package;
    # the rpath is the fallback for a regular (non-editable) install in site-packages.
    runtime_library_dirs=["$ORIGIN/../scipy_openblas32/lib"],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"), ("VDNA_BLAS_SCIPY_OPENBLAS", "1")],
    extra_compile_args=["-std=c11", "-O3", "-Wall", "-Wextra", "-ffp-contract=off", "-pthread"],
    extra_link_args=["-pthread"],
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
