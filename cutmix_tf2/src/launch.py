"""Multi-device launcher: one ``train.py`` worker per device of this server, from an HCCL rank table.

Every worker gets ``TF_CONFIG`` (``train.py`` builds its ``tf.distribute.MultiWorkerMirroredStrategy`` from it
on every device), plus the Ascend variables ``RANK_TABLE_FILE``, ``RANK_SIZE``, ``RANK_ID`` and ``DEVICE_ID``.
Flags, worker environment, logs and supervision: ``common/launch.py``.

    python -m src.launch --rank_table=rank_table.json --output_path=out [--server_index=auto] -- <train.py flags>
"""
from pathlib import Path

from common import cli, launch

PORT = 29600


def main(argv=None) -> int:
    return launch.main(argv, train_script=Path(__file__).resolve().parents[1] / "train.py", port=PORT,
                       description=__doc__.splitlines()[0])


if __name__ == "__main__":
    cli.run(main, errors=launch.ERRORS)
