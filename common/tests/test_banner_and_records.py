import json
import math

import pytest

from common import banner, runrecord
from common.throughput import ThroughputMeter


def test_banner_has_the_four_lines_in_design_order():
    text = banner.format_banner(1234.5678, 0.05123, 61.6, 0.66451)
    assert text.splitlines() == [
        "------------------ Final result ------------------",
        "Final Performance images/sec : 1234.57",
        "Final Performance sec/step : 0.0512",
        "E2E Training Duration sec : 62",
        "Final Train Accuracy : 0.6645",
    ]


def test_banner_fps_is_not_truncated_to_an_integer():
    # the Ascend scripts computed FPS with `bc` at scale 0; 390.9 must not become 390
    assert "images/sec : 390.90" in banner.format_banner(390.9, 0.04, 1, 0.1)


def test_parse_banner_reads_the_last_banner_in_a_log():
    log = "noise\n" + banner.format_banner(1, 2, 3, 0.25) + "\nmore\n" + banner.format_banner(10.5, 0.1, 7, 0.75)
    assert banner.parse_banner(log) == {"images_per_sec": 10.5, "sec_per_step": 0.1, "e2e_seconds": 7, "accuracy": 0.75}


def test_parse_banner_rejects_a_log_without_banner():
    with pytest.raises(ValueError, match="no 'Final result'"):
        banner.parse_banner("Epoch 1 loss 0.3")


def test_finish_run_writes_case_log_and_json(tmp_path, capsys):
    meter = ThroughputMeter(batch_size=16, warmup_steps=2, world_size=2)
    meter.record(5.0, steps=2)  # warm-up: compilation
    meter.record(1.0, steps=10)
    rec = runrecord.finish_run(output_dir=tmp_path, network="Net", case="Net_bs16_2p_acc", framework="x",
                               framework_version="1.0", device="cpu", rank_size=2, batch_size=16, params=123,
                               epochs=1, meter=meter, accuracy=0.5, loss=0.25, seed=1, e2e_seconds=9.4,
                               spec=runrecord.CaseLogSpec(runrecord.KEYS_LOSS_FIRST, "global", "sec_per_step",
                                                          "{case}_loss.txt"))
    out = capsys.readouterr().out
    parsed = banner.parse_banner(out)
    assert parsed["images_per_sec"] == pytest.approx(320.0)  # 16*10 images / 1 s * 2 ranks
    assert parsed["sec_per_step"] == pytest.approx(0.1)
    kv = dict(line.split(" = ", 1) for line in (tmp_path / "Net_bs16_2p_acc.log").read_text().splitlines())
    assert list(kv) == runrecord.CASE_LOG_KEYS
    assert kv["ActualFPS"] == "320.00" and kv["RankSize"] == "2" and kv["BatchSize"] == "32"
    assert kv["E2ETrainingTime"] == "9" and kv["ActualLoss"] == "0.250000"
    js = json.loads((tmp_path / "Net_bs16_2p_acc.json").read_text())
    for key in runrecord.JSON_REQUIRED:
        assert key in js
    assert js["warmup_seconds"] == pytest.approx(5.0) and js["params"] == 123 and js["steps"] == 12
    assert rec == js


def test_write_json_refuses_an_incomplete_record(tmp_path):
    with pytest.raises(ValueError, match="missing"):
        runrecord.write_json(tmp_path / "x.json", {"network": "n"})
    assert not (tmp_path / "x.json").exists()


def test_case_name_follows_ascend_convention():
    assert runrecord.case_name("CSPNet", 64, 1, perf=True) == "CSPNet_bs64_1p_perf"
    assert runrecord.case_name("CSPNet", 64, 8, perf=False) == "CSPNet_bs64_8p_acc"


class TestThroughputMeter:
    def test_warmup_steps_are_excluded_and_reported(self):
        m = ThroughputMeter(batch_size=10, warmup_steps=1)
        m.record(3.0)           # compile step
        m.record(0.5)
        m.record(0.5)
        assert m.images_per_sec == pytest.approx(20.0)
        assert m.warmup_seconds == pytest.approx(3.0)
        assert m.steady_steps == 2 and m.total_steps == 3

    def test_group_straddling_warmup_is_split_pro_rata(self):
        m = ThroughputMeter(batch_size=4, warmup_steps=3)
        m.record(10.0, steps=5)  # e.g. one sunk epoch of 5 steps
        assert m.warmup_steps_done == 3 and m.steady_steps == 2
        assert m.sec_per_step == pytest.approx(2.0)
        assert m.images_per_sec == pytest.approx(2.0)

    def test_only_warmup_falls_back_to_all_steps(self):
        m = ThroughputMeter(batch_size=8, warmup_steps=5)
        m.record(2.0, steps=2)
        assert not m.steady and m.images_per_sec == pytest.approx(8.0)

    def test_rate_is_summed_over_ranks(self):
        m = ThroughputMeter(batch_size=8, warmup_steps=0, world_size=4)
        m.record(1.0)
        assert m.images_per_sec == pytest.approx(32.0)

    def test_start_stop_measures_time(self):
        m = ThroughputMeter(batch_size=1, warmup_steps=0)
        m.start()
        dt = m.stop()
        assert dt >= 0 and m.steady_steps == 1 and math.isfinite(m.sec_per_step)

    def test_window_rates_split_steady_steps_and_median_resists_one_slow_window(self):
        m = ThroughputMeter(batch_size=10, warmup_steps=1)
        m.record(9.0)
        for dt in [0.1, 0.1, 1.0, 0.1, 0.1]:  # one slow step (e.g. a checkpoint save)
            m.record(dt)
        assert m.window_rates(5) == pytest.approx([100, 100, 10, 100, 100])
        assert m.as_dict()["median_window_images_per_sec"] == pytest.approx(100)
        assert ThroughputMeter(batch_size=1).window_rates() == []

    def test_bad_arguments_are_refused(self):
        with pytest.raises(ValueError):
            ThroughputMeter(batch_size=0)
