"""What this CPU is and which int8 instructions it has: latencies, and even INT8 answers, depend on
it (docs/RESULTS.md, "The shipped models on an AMD EPYC"), so measurements record it and `doctor`
reports it."""

from __future__ import annotations

import platform
from pathlib import Path

# /proc/cpuinfo flags of fast int8 dot products: x86 VNNI and AMX, Arm's SDOT/UDOT and I8MM.
INT8_DOT_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni", "asimddp", "i8mm")


def _cpuinfo() -> list[str]:
    path = Path("/proc/cpuinfo")
    return path.read_text().splitlines() if path.is_file() else []


def cpu_name() -> str:
    """The CPU's model name ("AMD EPYC", "Intel(R) Xeon(R) ..."); platform.processor() is empty on Linux."""
    for line in _cpuinfo():
        if line.startswith(("model name", "Model")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    for line in _cpuinfo():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def int8_dot_products(flags: set[str] | None = None) -> list[str]:
    """The fast int8 dot-product instruction sets this CPU has (empty: int8 runs on AVX2/NEON
    multiply-adds, and gains little over float at narrow layers)."""
    flags = cpu_flags() if flags is None else flags
    return [flag for flag in INT8_DOT_FLAGS if flag in flags]


def vector_width(flags: set[str]) -> str:
    """The widest x86 vector extension (what ONNX Runtime's MLAS picks its kernels by), or "" elsewhere."""
    return next((name for name in ("avx512f", "avx2", "avx") if name in flags), "")


def cpu_description(flags: set[str] | None = None, name: str | None = None) -> str:
    """The CPU as measurement records and tables name it: model name plus what decides INT8 speed
    and answers ("AMD EPYC (avx2, int8 dot: none)"): the model name alone does not tell a VNNI
    EPYC from an AVX2-only one."""
    flags = cpu_flags() if flags is None else flags
    name = cpu_name() if name is None else name
    width = vector_width(flags)
    dot = "int8 dot: " + ("/".join(int8_dot_products(flags)) or "none")
    return f"{name} ({width + ', ' if width else ''}{dot})"
