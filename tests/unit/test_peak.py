"""loadtest.peak: the CPU's INT8 peak from /proc/cpuinfo, and an encoder's multiply-accumulates per pair."""

from __future__ import annotations

import pytest

from loadtest.peak import against_peak, cpu_int8_peak, macs_per_pair

CPUINFO = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R)\ncpu MHz\t\t: 2600.000\nflags\t\t: fpu sse avx2 {}\n"
BERT_BASE = {"hidden": 768, "layers": 12, "intermediate": 3072}


@pytest.mark.parametrize("flags, instruction, macs", [
    ("avx512f avx512_vnni amx_tile amx_int8", "AMX-INT8", 1024),
    ("avx512f avx512_vnni", "AVX-512 VNNI", 128),
    ("avx_vnni", "AVX-VNNI", 64),
    ("", "AVX2", 32),
])
def test_the_widest_int8_instruction_sets_the_peak(flags, instruction, macs):
    peak = cpu_int8_peak(CPUINFO.format(flags), cores=2)
    assert (peak["instruction"], peak["macs_per_cycle_per_core"], peak["ghz"]) == (instruction, macs, 2.6)
    assert peak["tmacs"] == pytest.approx(macs * 2 * 2.6e9 / 1e12)


def test_a_cpu_without_flags_or_clock_has_no_peak():
    assert cpu_int8_peak("processor\t: 0\n", cores=2) is None


def test_bert_base_at_128_tokens_is_about_11_gmac_per_pair():
    # the usual figure: ~22 GFLOPs (11 GMAC) for one BERT-base sequence of 128 tokens
    assert macs_per_pair(BERT_BASE, 128) == pytest.approx(11.17e9, rel=1e-3)
    peak = cpu_int8_peak(CPUINFO.format("amx_int8"), cores=2)
    sentence = against_peak(100.0, BERT_BASE, 128, peak)
    assert "1,117 GMAC/s" in sentence and "21.0% of this CPU's INT8 peak (AMX-INT8" in sentence
