"""Build tests/c/check_gemm.c against each microkernel family and run it;
build tests/c/check_sums.c (grad bias sums, grad weight's A regrouping) and
tests/c/check_transpose.c (the pixel-tile move out to the planes) natively
and for AArch64 and run them; and tests/c/check_pool.c (the thread pool).

The C checker sweeps every remainder case of the pw_kernels.h contract
(rows, columns, depths, epilogue variants, strides, packed and direct B,
row-major and k-major A, NaN propagation, reads and writes outside the
operands); this module only builds it with warnings as errors and asserts
that it passed, with cases of both B layouts and of k-major A in both
precisions.  Kernels the host cannot execute are
skipped with the reason; NEON runs under qemu-aarch64 when the cross
toolchain is installed.
"""

import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "src")
CHECK = os.path.join(ROOT, "tests", "c", "check_gemm.c")
CFLAGS = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror"]
SUMMARY = re.compile(r"check_gemm (\w+): OK, (\d+) cases")
# Per precision, cases with packed and with direct B (b_ks != 0), and how
# many of them read A k-major (a_ks > 1).
SPLIT = re.compile(r"f32 \d+x\d+: (\d+) packed \+ (\d+) direct, "
                   r"(\d+) with k-major A; "
                   r"f64 \d+x\d+: (\d+) packed \+ (\d+) direct, "
                   r"(\d+) with k-major A")


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _compiler():
    for cc in (os.environ.get("CC"), "gcc", "cc"):
        if cc and shutil.which(cc):
            return cc
    return None


def _build(cc, kernel, kernel_src, out, extra=()):
    cmd = [cc, *CFLAGS, *extra, "-I" + SRC, "-DKERNEL=" + kernel, CHECK,
           kernel_src, "-o", str(out), "-lm"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, (
        "compiling check_gemm for %s failed:\n%s\n%s"
        % (kernel, " ".join(cmd), proc.stdout + proc.stderr))


def _run(cmd, kernel, timeout):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, "check_gemm %s failed (exit %d):\n%s" % (
        kernel, proc.returncode, output)
    m = SUMMARY.search(proc.stdout)
    assert m, "no summary line from check_gemm %s:\n%s" % (kernel, output)
    assert m.group(1) == kernel
    # Every B layout of the contract, and k-major A, must have been
    # exercised in both precisions, not just the total be nonzero.
    split = SPLIT.search(proc.stdout)
    assert split, "no per-layout counts from check_gemm %s:\n%s" % (
        kernel, output)
    p32, d32, k32, p64, d64, k64 = (int(g) for g in split.groups())
    assert all(n > 0 for n in (p32, d32, k32, p64, d64, k64)), output
    assert k32 < p32 + d32 and k64 < p64 + d64, output
    assert p32 + d32 + p64 + d64 == int(m.group(2)), output
    return output


# (kernel, source file, cpu flags the host needs)
NATIVE = [
    ("generic", "gemm_generic.c", ()),
    ("avx2", "gemm_avx2.c", ("avx2", "fma")),
    ("avx512", "gemm_avx512.c", ("avx512f",)),
]


@pytest.mark.parametrize("kernel,source,flags", NATIVE,
                         ids=[k for k, _, _ in NATIVE])
def test_kernel_native(kernel, source, flags, tmp_path):
    cc = _compiler()
    if cc is None:
        pytest.skip("no C compiler (gcc/cc) on PATH")
    kernel_src = os.path.join(SRC, source)
    if not os.path.exists(kernel_src):
        pytest.skip("src/%s does not exist" % source)
    missing = [f for f in flags if f not in _cpu_flags()]
    if missing:
        pytest.skip("CPU lacks %s" % ", ".join(missing))
    # No -m flags: the x86 kernel files select their instruction set with
    # target attributes, and this checks that they build without them.
    exe = tmp_path / ("check_gemm_" + kernel)
    _build(cc, kernel, kernel_src, exe)
    output = _run([str(exe)], kernel, timeout=600)
    # The kernels that copy direct B into panels (pw_isa.copies_b) are
    # checked doing it.
    if kernel in ("avx2", "avx512"):
        m = re.search(r"b_copy OK, (\d+) cases", output)
        assert m and int(m.group(1)) > 0, output


def _aarch64_tools():
    """(cross compiler, qemu), or skip the test."""
    cross = shutil.which("aarch64-linux-gnu-gcc")
    qemu = shutil.which("qemu-aarch64")
    if cross is None or qemu is None:
        pytest.skip("needs aarch64-linux-gnu-gcc and qemu-aarch64 on PATH "
                    "(Debian: gcc-aarch64-linux-gnu, qemu-user)")
    return cross, qemu


def test_kernel_neon_qemu(tmp_path):
    cross, qemu = _aarch64_tools()
    exe = tmp_path / "check_gemm_neon"
    # Static, so qemu needs no aarch64 sysroot to load it.
    _build(cross, "neon", os.path.join(SRC, "gemm_neon.c"), exe,
           extra=("-static",))
    _run([qemu, str(exe)], "neon", timeout=900)


def test_neon_file_compiles_natively(tmp_path):
    """gemm_neon.c builds warning-free on the host (to nothing off AArch64)."""
    cc = _compiler()
    if cc is None:
        pytest.skip("no C compiler (gcc/cc) on PATH")
    obj = tmp_path / "gemm_neon.o"
    cmd = [cc, *CFLAGS, "-pedantic", "-I" + SRC, "-c",
           os.path.join(SRC, "gemm_neon.c"), "-o", str(obj)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# The hand-vectorised helpers, each checker against the files it tests:
# grad bias sums, grad weight's A regrouping and the packing of channel
# planes (pw_pack.c, which calls pw_transpose.c's transposes), the
# pixel-tile move out to the planes and dW^T into dW (pw_transpose.c).
HELPER_CHECKS = [("check_sums", ("pw_pack.c", "pw_transpose.c")),
                 ("check_transpose", ("pw_transpose.c",))]


def _check_helper(name, sources, cc, exe, runner=(), extra=(), args=()):
    cmd = [cc, *CFLAGS, *extra, "-I" + SRC, os.path.join(ROOT, "tests", "c", name + ".c"),
           *(os.path.join(SRC, s) for s in sources), "-o", str(exe), "-lm"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, " ".join(cmd) + "\n" + proc.stdout + proc.stderr
    proc = subprocess.run([*runner, str(exe), *args], capture_output=True, text=True,
                          timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    m = re.search(name + r": OK, (\d+) cases", proc.stdout)
    assert m and int(m.group(1)) > 1000, out


@pytest.mark.parametrize("name, sources", HELPER_CHECKS, ids=[c for c, _ in HELPER_CHECKS])
def test_helpers_native(tmp_path, name, sources):
    """The hand-vectorised helpers as the host builds them (on x86, the
    loader picks the AVX2 clone where the CPU has it)."""
    cc = _compiler()
    if cc is None:
        pytest.skip("no C compiler (gcc/cc) on PATH")
    _check_helper(name, sources, cc, tmp_path / name)


@pytest.mark.parametrize("name, sources", HELPER_CHECKS, ids=[c for c, _ in HELPER_CHECKS])
def test_helpers_neon_qemu(tmp_path, name, sources):
    """The same code built for AArch64, where the vectors are NEON's."""
    cross, qemu = _aarch64_tools()
    _check_helper(name, sources, cross, tmp_path / (name + "_a64"), runner=(qemu,),
                  extra=("-static",))


# Off Linux the pool's workers sleep on a condition variable instead of a
# futex; -U__linux__ builds that way here.
POOL_WAITS = [("-pthread",), ("-pthread", "-U__linux__")]


@pytest.mark.parametrize("extra", POOL_WAITS, ids=["futex", "condvar"])
def test_pool_native(tmp_path, extra):
    """Every item of every run exactly once, from concurrent callers, nested
    runs, callers that end, and forked children, with workers spinning and
    asleep between runs (tests/c/check_pool.c)."""
    cc = _compiler()
    if cc is None:
        pytest.skip("no C compiler (gcc/cc) on PATH")
    _check_helper("check_pool", ("pw_pool.c",), cc, tmp_path / "check_pool", extra=extra)


def test_pool_aarch64_qemu(tmp_path):
    """The pool's atomics and futex as AArch64 builds them; no fork, which
    qemu-user cannot follow with new threads."""
    cross, qemu = _aarch64_tools()
    _check_helper("check_pool", ("pw_pool.c",), cross, tmp_path / "check_pool_a64",
                  runner=(qemu,), extra=("-static", "-pthread"), args=("emulated",))
