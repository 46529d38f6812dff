"""Multi-device launcher: one ``train.py`` process per device that an HCCL rank table lists for this server.

Elsewhere than on Ascend every worker gets a ``TF_CONFIG``, which ``train.py`` turns into a
``tf.distribute.Server`` and TensorFlow's collective all-reduce (``MultiWorkerMirroredStrategy`` in graph
mode). On Ascend (``npu_bridge`` importable, ``--device`` npu or auto) the workers get no ``TF_CONFIG``: as the
ModelZoo scripts do, each one has ``RANK_TABLE_FILE``, ``RANK_SIZE``, ``RANK_ID`` and ``DEVICE_ID`` and HCCL does
the all-reduce. Flags, worker environment, logs and supervision: ``common/launch.py``.

    python launch.py --rank_table=rank_table.json --output_path=out [--server_index=auto] -- <train.py flags>
"""
import importlib.util
from pathlib import Path

from common import cli, launch

PORT = 29700


def use_hccl(device):
    return device in ("npu", "auto") and importlib.util.find_spec("npu_bridge") is not None


def main(argv=None) -> int:
    return launch.main(argv, train_script=Path(__file__).resolve().parent / "train.py", port=PORT,
                       description=__doc__.splitlines()[0], use_hccl=use_hccl)


if __name__ == "__main__":
    cli.run(main, errors=launch.ERRORS)
