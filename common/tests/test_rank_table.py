import json
import subprocess
import sys

import pytest
from hypothesis import given, settings, HealthCheck
from hypothesis import strategies as st

from common.rank_table import RankTableError, load_rank_table, parse_rank_table

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def table(servers=(("10.0.0.1", 8),), **over):
    rank, server_list = 0, []
    for sid, n in servers:
        devs = []
        for i in range(n):
            devs.append({"device_id": str(i), "device_ip": f"192.98.92.{rank}", "rank_id": str(rank)})
            rank += 1
        server_list.append({"server_id": sid, "device": devs, "host_nic_ip": "reserve"})
    t = {"version": "1.0", "server_count": str(len(server_list)), "server_list": server_list, "status": "completed"}
    t.update(over)
    return t


def write(tmp_path, obj, name="rank_table.json"):
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


def test_single_server_table_answers_size_devices_and_master(tmp_path):
    t = load_rank_table(write(tmp_path, table()))
    assert t.rank_size == 8 and t.server_count == 1 and t.master_addr == "10.0.0.1"
    assert [d.device_id for d in t.devices_of(0)] == list(range(8)) and t.rank_start(0) == 0


def test_two_server_table_finds_this_server_by_address(tmp_path):
    t = load_rank_table(write(tmp_path, table((("127.0.0.1", 1), ("127.0.0.2", 1)))))
    assert t.rank_size == 2 and t.rank_start(1) == 1
    assert t.find_server({"127.0.0.2"}) == 1
    with pytest.raises(RankTableError, match="several server_ids"):
        t.find_server({"127.0.0.1", "127.0.0.2"})
    with pytest.raises(RankTableError, match="no server_id matches"):
        t.find_server({"8.8.8.8"})


def test_master_is_the_server_holding_rank_zero(tmp_path):
    t = table((("a", 1), ("b", 1)))
    t["server_list"][0]["device"][0]["rank_id"], t["server_list"][1]["device"][0]["rank_id"] = "1", "0"
    assert parse_rank_table(t).master_addr == "b"


@pytest.mark.parametrize("mutate, message", [
    (lambda t: t.pop("server_list"), "server_list"),
    (lambda t: t.pop("version"), "missing key 'version'"),
    (lambda t: t.update(server_count="2"), "server_count is 2 but server_list has 1"),
    (lambda t: t.update(server_count=1), "must be a string"),
    (lambda t: t["server_list"][0]["device"][1].update(rank_id="0"), "duplicate rank_id 0"),
    (lambda t: t["server_list"][0]["device"][1].update(device_id="0"), "duplicate device_id 0"),
    (lambda t: t["server_list"][0]["device"][7].update(rank_id="9"), "rank_ids must be 0..7"),
    (lambda t: t["server_list"][0]["device"][0].update(rank_id=0), "must be a string"),
    (lambda t: t["server_list"][0]["device"][0].update(rank_id="-1"), "non-negative integer"),
    (lambda t: t["server_list"][0]["device"][0].pop("device_ip"), "missing key 'device_ip'"),
    (lambda t: t["server_list"][0].update(device=[]), "empty 'device'"),
    (lambda t: t.update(status="pending"), "status"),
])
def test_rank_table_rejects_malformed_tables(tmp_path, mutate, message):
    t = table()
    mutate(t)
    p = write(tmp_path, t)
    with pytest.raises(RankTableError) as exc:
        load_rank_table(p)
    text = str(exc.value)
    assert message in text and text.startswith(str(p)) and "\n" not in text


def test_rank_table_rejects_device_count_mismatch(tmp_path):
    with pytest.raises(RankTableError, match="table lists 8 devices but --device_num is 4"):
        load_rank_table(write(tmp_path, table()), device_num=4)


@pytest.mark.parametrize("content, message", [("{not json", "not valid JSON"), ("[]", "JSON object"), ("", "not valid JSON")])
def test_rank_table_rejects_unreadable_json(tmp_path, content, message):
    with pytest.raises(RankTableError, match=message):
        load_rank_table(write(tmp_path, content))


def test_rank_table_missing_file_is_one_line_error(tmp_path):
    with pytest.raises(RankTableError, match="file not found"):
        load_rank_table(tmp_path / "nope.json")


def test_cli_prints_shell_assignments_and_fails_cleanly(tmp_path):
    p = write(tmp_path, table((("127.0.0.1", 2), ("127.0.0.2", 2))))
    env = {"PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "common.rank_table", str(p), "--server_index", "1"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    kv = dict(line.split("=", 1) for line in out.stdout.splitlines())
    assert kv["RANK_SIZE"] == "4" and kv["RANK_START"] == "2" and kv["MASTER_ADDR"] == "127.0.0.1"
    assert kv["LOCAL_DEVICE_IDS"] == "'0 1'" and kv["SERVER_INDEX"] == "1"
    bad = subprocess.run([sys.executable, "-m", "common.rank_table", str(p), "--device_num", "8"],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--device_num is 8" in bad.stderr


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 20) | st.text(max_size=6) | st.sampled_from(["0", "1", "2", "completed", "1.0"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["version", "server_count", "server_list", "status", "server_id", "device", "device_id",
                         "device_ip", "rank_id", "host_nic_ip", "x"]), children, max_size=6),
    max_leaves=30)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_fuzz_rank_table_reader_only_raises_its_own_error(data):
    try:
        t = parse_rank_table(data, "fuzz.json")
    except RankTableError as exc:
        assert str(exc).startswith("fuzz.json: ") and "\n" not in str(exc)
    else:
        assert t.rank_size >= 1 and 0 <= t.master_index < t.server_count


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_rank_table_file_bytes(tmp_path_factory, blob):
    p = tmp_path_factory.mktemp("rt") / "t.json"
    p.write_bytes(blob)
    with pytest.raises(RankTableError):
        load_rank_table(p)
