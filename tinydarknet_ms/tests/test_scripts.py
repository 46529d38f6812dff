"""The original's GPU and CPU script names: thin wrappers over run_standalone_train.sh, run_eval.sh and
run_distribute_train.sh. Each answers -h with its own usage, and its arguments land where the original put them
(seen from which argument the wrapped script's one-line error names)."""
import pytest

from conftest import RECIPE, run

WRAPPERS = ["run_standalone_train_gpu.sh", "run_distribute_train_gpu.sh", "run_eval_gpu.sh", "run_train_cpu.sh",
            "run_eval_cpu.sh"]


@pytest.mark.parametrize("script", WRAPPERS)
def test_wrapper_answers_help_with_its_own_usage(script):
    proc = run(["bash", RECIPE / "scripts" / script, "-h"], timeout=60)
    assert proc.returncode == 0 and proc.stdout.splitlines()[0].startswith(f"bash scripts/{script} ")


@pytest.mark.parametrize("args, error", [
    (["run_train_cpu.sh", "/no/train"], "/no/train: TRAIN_DATA_DIR is not a directory"),  # device 0 put in front
    (["run_standalone_train_gpu.sh", "3", "/no/train"], "/no/train: TRAIN_DATA_DIR is not a directory"),
    (["run_eval_cpu.sh", "{tmp}", "imagenet", "/no/x.ckpt"], "/no/x.ckpt: checkpoint not found"),
    (["run_eval_gpu.sh", "{tmp}", "/no/x.ckpt"], "/no/x.ckpt: checkpoint not found"),
    (["run_distribute_train_gpu.sh", "two", "{tmp}"], "RANK_SIZE must be a positive integer, got 'two'"),
    (["run_distribute_train_gpu.sh", "2", "/no/train"], "/no/train: TRAIN_DATA_DIR is not a directory"),
])
def test_wrapper_arguments_reach_the_wrapped_script_in_the_original_order(args, error, tmp_path):
    cmd = ["bash", RECIPE / "scripts" / args[0], *[a.replace("{tmp}", str(tmp_path)) for a in args[1:]]]
    proc = run(cmd, timeout=120, check=False, cwd=tmp_path)
    errors = [line for line in proc.stdout.splitlines() if line.startswith("ERROR")]
    assert proc.returncode == 2 and errors == [f"ERROR: {error}"], proc.stdout
