"""cpu_info reads this machine's /proc/cpuinfo; the int8 verdict is checked on known flag sets."""

from __future__ import annotations

from pathlib import Path

from robot_compress.runtime.cpu_info import cpu_description, cpu_flags, cpu_name, int8_dot_products


def test_cpu_name_and_flags_come_from_this_machine():
    assert cpu_name()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        assert cpu_flags(), "no flags line read from /proc/cpuinfo"
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        if names:  # x86: the model name, not the architecture platform.processor() would give
            assert cpu_name() == names[0]
    assert int8_dot_products() == int8_dot_products(cpu_flags())


def test_int8_dot_products_of_known_cpus():
    zen3 = {"avx", "avx2", "fma", "sha_ni", "vaes"}  # AMD EPYC Zen 3: AVX2, no VNNI
    sapphire_rapids = zen3 | {"avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16"}
    cortex_a76 = {"fp", "asimd", "asimddp", "aes"}  # Raspberry Pi 5
    cortex_a72 = {"fp", "asimd", "crc32"}  # Raspberry Pi 4: no dot product
    assert int8_dot_products(zen3) == [] and int8_dot_products(cortex_a72) == []
    assert int8_dot_products(sapphire_rapids) == ["amx_int8", "avx512_vnni", "avx_vnni"]
    assert int8_dot_products(cortex_a76) == ["asimddp"]


def test_cpu_description_tells_an_avx2_epyc_from_a_vnni_one():
    zen3 = {"avx", "avx2", "fma"}
    zen4 = zen3 | {"avx512f", "avx512_vnni"}
    assert cpu_description(zen3, "AMD EPYC") == "AMD EPYC (avx2, int8 dot: none)"
    assert cpu_description(zen4, "AMD EPYC") == "AMD EPYC (avx512f, int8 dot: avx512_vnni)"
    assert cpu_description({"fp", "asimd", "asimddp"}, "Cortex-A76") == "Cortex-A76 (int8 dot: asimddp)"
    assert cpu_description().startswith(cpu_name())
