"""Build the compiled core: C kernels plus the Cython drivers, with OpenMP
when the compiler has it (probed by compiling, linking and running a tiny
program): it runs the threads by default and sets their default count
(OMP_NUM_THREADS, threadpoolctl).  pwconv's own pool (pthreads) is built in
too; without OpenMP, with a warning, calls default to one thread and
num_threads= runs more on the pool."""
import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import warnings

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

C_SOURCES = [
    "src/gemm_generic.c",
    "src/gemm_avx2.c",
    "src/gemm_avx512.c",
    "src/gemm_neon.c",
    "src/pw_dispatch.c",
    "src/pw_gather.c",
    "src/pw_pack.c",
    "src/pw_pool.c",
    "src/pw_scratch.c",
    "src/pw_transpose.c",
]

OPENMP_PROBE = textwrap.dedent("""
    #include <omp.h>
    #include <stdio.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        printf("%d\\n", n > 0);
        return 0;
    }
""")


def openmp_flags(compiler_cmd):
    """(compile, link) flags that give a working OpenMP, or None."""
    if os.environ.get("PWCONV_NO_OPENMP"):
        return None
    candidates = [(["-fopenmp"], ["-fopenmp"])]
    if sys.platform == "darwin":
        candidates.append((["-Xpreprocessor", "-fopenmp"], ["-lomp"]))
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        exe = os.path.join(tmp, "probe")
        with open(src, "w") as f:
            f.write(OPENMP_PROBE)
        for cflags, lflags in candidates:
            try:
                subprocess.run(compiler_cmd + cflags + [src, "-o", exe] + lflags,
                               check=True, capture_output=True)
                run = subprocess.run([exe], check=True, capture_output=True, text=True)
            except (OSError, subprocess.CalledProcessError):
                continue
            if run.stdout.strip() == "1":
                return cflags, lflags
    return None


class BuildExt(build_ext):
    def build_extensions(self):
        compiler = self.compiler.compiler_so[:1] if hasattr(self.compiler, "compiler_so") else None
        flags = openmp_flags(compiler) if compiler else None
        if flags is None:
            warnings.warn("pwconv: no working OpenMP found; calls will default to one "
                          "thread (num_threads= still sets more)")
        for ext in self.extensions:
            if self.compiler.compiler_type == "msvc":
                ext.extra_compile_args += ["/O2", "/openmp"] if flags else ["/O2"]
                continue
            # -pthread: the pool's threads, also where OpenMP (which implies
            # it) is off, and on a C library that keeps pthreads apart.
            ext.extra_compile_args += ["-O3", "-std=c11", "-fno-math-errno", "-pthread"]
            ext.extra_link_args += ["-pthread"]
            if os.environ.get("PWCONV_NATIVE"):
                # Only on request: a -march=native build may not run elsewhere.
                ext.extra_compile_args.append("-march=native")
            if flags:
                ext.extra_compile_args += flags[0]
                ext.extra_link_args += flags[1]
        super().build_extensions()


debug = bool(os.environ.get("PWCONV_DEBUG"))
directives = {
    "language_level": 3,
    "boundscheck": debug,
    "wraparound": debug,
    "cdivision": not debug,
    "initializedcheck": debug,
}

extensions = [
    Extension(
        "pwconv._core",
        sources=["src/_core.pyx"] + C_SOURCES,
        # Without the headers here, a build directory left from an earlier
        # build keeps objects compiled against the old ones (and an sdist
        # would leave out the .pxi files _core.pyx includes).
        depends=sorted(glob.glob("src/*.h") + glob.glob("src/*.pxi")),
        include_dirs=["src", numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    ),
    Extension(
        "pwconv._guard",
        sources=["src/_guard.pyx"],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    ),
]

setup(
    ext_modules=cythonize(extensions, compiler_directives=directives,
                          include_path=["src"]),
    cmdclass={"build_ext": BuildExt},
)
