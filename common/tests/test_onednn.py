"""common.onednn: oneDNN's ISA cap is set only where a probe on this host measured it faster, never over the
user's own choice (the probe child itself is tested in the MindSpore recipes' suites)."""
import pytest

from common import onednn


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELZOO_TUNE_CACHE", str(tmp_path / "tune"))


def test_the_cap_is_set_where_it_measures_faster():
    env = {}
    d = onednn.choose_isa_for_plain_layout_convs(env, measure={"ALL": 6.7, "AVX2": 0.057}.get)
    assert (d.choice, d.how) == ("AVX2", "probed") and env == {"ONEDNN_MAX_CPU_ISA": "AVX2"}


def test_no_cap_where_it_does_not_win_by_the_margin():
    env = {}
    d = onednn.choose_isa_for_plain_layout_convs(env, measure={"ALL": 0.100, "AVX2": 0.095}.get)
    assert d.choice == "ALL" and env == {}


def test_the_users_choice_wins_and_nothing_is_measured():
    def never(_):
        raise AssertionError("measured although the user chose")
    for name in onednn.ISA_VARIABLES:
        env = {name: "AVX512_CORE"}
        d = onednn.choose_isa_for_plain_layout_convs(env, measure=never)
        assert (d.choice, d.how) == ("AVX512_CORE", "user") and env == {name: "AVX512_CORE"}
