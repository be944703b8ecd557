"""What the CPU can do fast: bf16 matrix instructions (AVX512-BF16 or AMX) or not.

CPUs without them emulate bf16 and run it many times slower than fp32, so bf16 on CPU is only ever
chosen where these flags are present.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=1)
def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The feature flags of the first CPU in `cpuinfo` (empty where the file does not exist, e.g. macOS)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def cpu_has_fast_bf16(flags: frozenset[str] | None = None) -> bool:
    """True where the CPU runs bf16 matmuls natively (AVX512-BF16 or AMX-BF16)."""
    return any(flag in (cpu_flags() if flags is None else flags) for flag in BF16_FLAGS)
