"""ci/dist_speed.py: its rank table, scaling figure and table (the runs themselves are the lead's to time)."""
import dist_speed
from common.rank_table import load_rank_table


def test_generated_table_is_a_valid_two_device_table(tmp_path):
    table = load_rank_table(dist_speed.write_rank_table(tmp_path / "t.json", 2), 2)
    assert table.rank_size == 2 and table.server_count == 1 and table.master_addr == "127.0.0.1"


def test_scaling_is_summed_two_rank_rate_over_one_rank_rate():
    assert dist_speed.scaling({"images_per_sec": 40.0}, {"images_per_sec": 60.0}) == 1.5


def test_a_failed_run_gives_no_scaling_and_the_table_says_error_not_zero():
    rows = {"cutmix_tf2": {"batch": 32, "1rank": {"images_per_sec": 50.0}, "2rank": {"error": "exit 1: boom"}},
            "cspnet_tf1": {"skipped": "cspnet_tf1/test/train_performance_8p.sh not found"}}
    assert dist_speed.scaling(rows["cutmix_tf2"]["1rank"], rows["cutmix_tf2"]["2rank"]) is None
    lines = dist_speed.markdown(rows).splitlines()
    assert lines[2] == "| cutmix_tf2 | 32 | 50.00 | error | - |"
    assert lines[3].startswith("| cspnet_tf1 |") and "skipped: cspnet_tf1/test/train_performance_8p.sh" in lines[3]
