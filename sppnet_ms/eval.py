"""Evaluate a ZFNet / SPPNet checkpoint (top-1 / top-5) on an ImageNet-style folder, as the original ``eval.py``.

The network is built with ``phase='test'`` (no dropout). Input size and class count default to what the
checkpoint's training run recorded, so ``best.ckpt`` reproduces the accuracy printed at the end of training.
The folders are labelled by the class names the checkpoint carries (training's numbering), so a class missing
from the evaluation folder shifts no label; a checkpoint without them (an original MindSpore one) falls back to
the folder's own sorted class names, and says so.
"""
import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import cli  # noqa: E402  (after the path set-up above)
from common.checkpoint import CheckpointError  # noqa: E402
from common.imagefolder import ImageFolderError, reader_error_line  # noqa: E402


def build_parser():
    p = argparse.ArgumentParser(description='Evaluate a ZFNet / SPPNet checkpoint.')
    p.add_argument('--test_model', default='sppnet_single', choices=['zfnet', 'sppnet_single', 'sppnet_mult'])
    p.add_argument('--data_path', default='./imagenet_original/val',
                   help='evaluation folder (class sub-folders) or its parent holding val/')
    p.add_argument('--ckpt_path', default='./ckpt/best.ckpt', help='checkpoint file')
    p.add_argument('--device_target', default='auto', help='Ascend | GPU | CPU | auto')
    p.add_argument('--device_id', type=int, default=int(os.environ.get('DEVICE_ID', 0)))
    p.add_argument('--dataset_sink_mode', type=cli.str2bool, default=False,
                   help='sink the dataset into the device graph while evaluating')
    p.add_argument('--batch_size', type=cli.positive_int, default=None, help='default: the model config')
    p.add_argument('--image_size', type=cli.positive_int, default=None, help='default: the checkpoint\'s, else 224')
    p.add_argument('--num_classes', type=cli.positive_int, default=None, help="default: the checkpoint's")
    p.add_argument('--skip_bad_images', action='store_true', help='skip (and list) unreadable images')
    p.add_argument('--vet_images', type=cli.str2bool, default=True, help='decode every image once before evaluating')
    p.add_argument('--workers', type=cli.positive_int, default=None, help='data pipeline threads')
    p.add_argument('--result_file', default=None, help='also write the result as JSON here')
    p.add_argument('--logits_file', default=None,
                   help="also save every image's logits, label and path here (.npz; ours, for comparing outputs)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    import mindspore as ms
    from mindspore import nn
    from mindspore.train import Model

    from common.checkpoint import atomic_write_text
    from common.ms import load_ckpt, load_into, meta_value
    from common.ms.checkpoint import classes_of

    from src.config import get_config
    from src.dataset import create_dataset_imagenet, load_split
    from src.eval_callback import LogitsCollector, eval_metrics, evaluate
    from src.sppnet import SppNet
    from src.utils import resolve_device_target

    params = load_ckpt(args.ckpt_path)
    trained = meta_value(params, 'train_model')
    if trained not in (None, args.test_model) and {trained, args.test_model} & {'zfnet'}:
        raise CheckpointError(f"{args.ckpt_path}: checkpoint is a {trained} model, not {args.test_model}")
    if 'fc3.weight' not in params:
        raise CheckpointError(f"{args.ckpt_path}: no fc3.weight, not a ZFNet/SPPNet checkpoint")
    num_classes = args.num_classes or int(params['fc3.weight'].shape[0])
    image_size = args.image_size or int(meta_value(params, 'image_size', 224))
    batch_size = args.batch_size or get_config(args.test_model).batch_size

    target = resolve_device_target(args.device_target)
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device(target, args.device_id)

    names = classes_of(params, args.ckpt_path)
    if names is None:
        print(f"{args.ckpt_path}: the checkpoint carries no class names; labelling the class folders of "
              f"{args.data_path} by their own sorted order")
    samples, classes = load_split(args.data_path, 'val', args.vet_images, args.skip_bad_images, classes=names)
    if len(classes) > num_classes:
        raise ImageFolderError(f"{args.data_path}: {len(classes)} class folders but the model has "
                               f"{num_classes} outputs")
    net = SppNet(num_classes, 'test', True, args.test_model, image_size)
    load_into(net, params, args.ckpt_path, f'{args.test_model} at image size {image_size}')
    net.set_train(False)
    loss = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction='mean')
    collector = LogitsCollector() if args.logits_file else None
    model = Model(net, loss_fn=loss, metrics=eval_metrics(collector))
    dataset = create_dataset_imagenet(samples, batch_size, args.test_model, False, image_size, workers=args.workers)
    print('============== Starting Testing ==============')
    print(f'load checkpoint from [{args.ckpt_path}].')
    res = evaluate(model, dataset, args.dataset_sink_mode)
    print(f'result : {res}')
    if collector is not None:
        collector.save(args.logits_file, [path for path, _ in samples])
    if args.result_file:
        atomic_write_text(args.result_file, json.dumps(dict(res, images=len(samples), ckpt=args.ckpt_path,
                                                             image_size=image_size), indent=2) + '\n')
    return 0


if __name__ == '__main__':
    cli.run(main, errors=(ImageFolderError, CheckpointError, ValueError), translate=reader_error_line)
