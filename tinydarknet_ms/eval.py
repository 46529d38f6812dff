"""Evaluate a Tiny-DarkNet checkpoint on an ImageNet-style val folder: prints top-1 and top-5.

As mindspore-ai/models research/cv/tinydarknet eval.py (``accuracy:  {...}``), but every val image counts
(the original dropped the last partial batch), and the val folders are labelled through the class names the
checkpoint carries (train.py saves them), so a class missing from val cannot shift the labels; a checkpoint
without them (an original MindSpore one) falls back to the val folder's own sorted names, with a line saying so.

    python eval.py --val_data_dir=/data/imagenet/val --checkpoint_path=train_tinydarknet_imagenet-500_1251.ckpt
"""
import json
import sys
from pathlib import Path

import mindspore as ms
from mindspore.train import Model

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), str(_HERE.parent)]  # src/ and the repo's common/ without any setup
from common import cli  # noqa: E402
from common.checkpoint import CheckpointError  # noqa: E402
from common.imagefolder import ImageFolderError, reader_error_line  # noqa: E402
from common.ms import load_ckpt, load_into  # noqa: E402
from common.ms.checkpoint import classes_of  # noqa: E402
from src.CrossEntropySmooth import CrossEntropySmooth  # noqa: E402
from src.config import device_id_from_env, get_config  # noqa: E402
from src.dataset import create_dataset_imagenet, find_split, load_samples  # noqa: E402
from src.tinydarknet import TinyDarkNet  # noqa: E402
from src.utils import LogitsCollector, detect_device, eval_metrics, setup_context  # noqa: E402

KEYS = ["device_target", "device_id", "dataset_name", "data_path", "val_data_dir", "num_classes",
        "image_size", "batch_size", "num_parallel_workers", "check_images", "skip_bad_images", "checkpoint_path",
        "logits_file"]


def main(argv=None):
    cfg = get_config(argv, description=__doc__.splitlines()[0], keys=KEYS, prog="eval.py")
    device = detect_device(cfg.device_target)
    setup_context(device, device_id_from_env(cfg))

    val_dir = find_split(cfg.val_data_dir or cfg.data_path, "val")
    params = load_ckpt(cfg.checkpoint_path)
    trained = classes_of(params, cfg.checkpoint_path)
    if trained is None:
        print(f"{cfg.checkpoint_path}: no class names in this checkpoint; labelling {val_dir} by its own sorted "
              "class folders (correct only if val has exactly the classes of training)")
    samples, classes = load_samples(val_dir, cfg.check_images, cfg.skip_bad_images, cfg.num_parallel_workers or 1,
                                    classes=trained)
    if len(classes) > cfg.num_classes:
        where = cfg.checkpoint_path if trained is not None else val_dir
        raise cli.RecipeError(f"{where}: {len(classes)} classes but num_classes is {cfg.num_classes}")

    net = TinyDarkNet(num_classes=cfg.num_classes)
    load_into(net, params, cfg.checkpoint_path, f"Tiny-DarkNet with num_classes={cfg.num_classes}")
    net.set_train(False)
    loss = CrossEntropySmooth(sparse=True, reduction="mean", smooth_factor=0.0, num_classes=cfg.num_classes)
    collector = LogitsCollector() if cfg.logits_file else None
    model = Model(net, loss_fn=loss, metrics=eval_metrics(collector))
    data = create_dataset_imagenet(samples, False, cfg.batch_size, cfg.image_size,
                                   num_parallel_workers=cfg.num_parallel_workers)
    acc = model.eval(data, dataset_sink_mode=False)
    acc = {k: float(acc[k]) for k in ("top_1_accuracy", "top_5_accuracy")}
    print(f"evaluated {len(samples)} images from {val_dir} with {cfg.checkpoint_path}")
    print("accuracy: ", acc)
    print("result:", json.dumps(acc))
    if collector is not None:
        collector.save(cfg.logits_file, [path for path, _ in samples])
    return 0


if __name__ == "__main__":
    cli.run(main, errors=(CheckpointError, ImageFolderError), translate=reader_error_line)
