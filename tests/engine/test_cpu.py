"""CPU capability detection: bf16 counts as fast only with AVX512-BF16 or AMX."""

from genpromp_annotate.engine.cpu import cpu_flags, cpu_has_fast_bf16


def test_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n\nprocessor\t: 1\nflags : x\n")
    assert cpu_flags.__wrapped__(str(info)) == frozenset({"fpu", "sse", "avx2", "avx512f", "avx512_bf16"})
    assert cpu_flags.__wrapped__(str(tmp_path / "missing")) == frozenset()


def test_bf16_is_fast_only_with_native_instructions():
    assert cpu_has_fast_bf16(frozenset({"avx2", "avx512_bf16"}))
    assert cpu_has_fast_bf16(frozenset({"amx_bf16", "amx_tile"}))
    assert not cpu_has_fast_bf16(frozenset({"avx2", "avx512f", "fma"}))  # AVX2/AVX-512 without bf16: emulated
    assert not cpu_has_fast_bf16(frozenset())
