"""common.onednn: the AVX2 cap is set only on AVX-512 CPUs and never over the user's own choice."""
from common import onednn

AVX512 = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512vl avx512_bf16\n"
AVX2 = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes sve\n"


def _cap(tmp_path, cpuinfo, env):
    f = tmp_path / "cpuinfo"
    f.write_text(cpuinfo)
    return onednn.cap_isa_for_plain_layout_convs(env, f)


def test_avx512_cpu_gets_the_avx2_cap(tmp_path):
    env = {}
    assert _cap(tmp_path, AVX512, env) == "AVX2"
    assert env == {"ONEDNN_MAX_CPU_ISA": "AVX2"}


def test_other_cpus_are_left_alone(tmp_path):
    for cpuinfo in (AVX2, ARM, ""):
        env = {}
        assert _cap(tmp_path, cpuinfo, env) is None and env == {}
    env = {}
    assert onednn.cap_isa_for_plain_layout_convs(env, tmp_path / "missing") is None and env == {}


def test_the_users_choice_wins(tmp_path):
    for name in onednn.ISA_VARIABLES:
        env = {name: "ALL"}
        assert _cap(tmp_path, AVX512, env) is None
        assert env == {name: "ALL"}


def test_a_flag_named_like_avx512f_is_not_taken_for_it(tmp_path):
    assert not onednn.cpu_has_avx512(tmp_path / "x")
    f = tmp_path / "cpuinfo"
    f.write_text("flags\t\t: avx2 avx512fx\n")
    assert not onednn.cpu_has_avx512(f)
