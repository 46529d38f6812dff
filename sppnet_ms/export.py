"""Export a ZFNet / SPPNet checkpoint to MINDIR (or AIR on Ascend, or ONNX), then load it back and compare.

The original ``export.py`` read ``args.train_model`` while its parser defines ``--export_model``, so it always
crashed; here the flag is used. ONNX works because LRN is written in exportable primitives (src/sppnet.py).
"""
import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import cli  # noqa: E402  (after the path set-up above)
from common.checkpoint import CheckpointError  # noqa: E402

SUFFIX = {'MINDIR': '.mindir', 'ONNX': '.onnx', 'AIR': '.air'}


def build_parser():
    p = argparse.ArgumentParser(description='Export a ZFNet / SPPNet checkpoint.')
    p.add_argument('--ckpt_file', required=True, help='checkpoint to export')
    p.add_argument('--file_format', default='MINDIR', choices=['AIR', 'ONNX', 'MINDIR'])
    p.add_argument('--batch_size', type=cli.positive_int, default=1)
    p.add_argument('--export_model', default='sppnet_single', choices=['zfnet', 'sppnet_single', 'sppnet_mult'])
    p.add_argument('--file_name', default=None, help='output path without suffix (default: the model name)')
    p.add_argument('--image_size', type=cli.positive_int, default=None, help="default: the checkpoint's, else 224")
    p.add_argument('--device_target', default='auto', help='Ascend | GPU | CPU | auto')
    p.add_argument('--device_id', type=int, default=int(os.environ.get('DEVICE_ID', 0)))
    p.add_argument('--verify', type=cli.str2bool, default=True,
                   help='load the exported file back (MindSpore GraphCell / onnxruntime) and compare outputs')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    import numpy as np
    import mindspore as ms
    from mindspore import Tensor

    from common.checkpoint import atomic_write
    from common.ms import load_ckpt, load_into, meta_value

    from src.sppnet import SppNet
    from src.utils import resolve_device_target

    target = resolve_device_target(args.device_target)
    if args.file_format == 'AIR' and target != 'Ascend':
        raise ValueError('--file_format AIR needs the Ascend stack; use MINDIR or ONNX here')
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device(target, args.device_id)

    params = load_ckpt(args.ckpt_file)
    if 'fc3.weight' not in params:
        raise CheckpointError(f"{args.ckpt_file}: no fc3.weight, not a ZFNet/SPPNet checkpoint")
    num_classes = int(params['fc3.weight'].shape[0])
    image_size = args.image_size or int(meta_value(params, 'image_size', 224))
    net = SppNet(num_classes, 'test', True, args.export_model, image_size)
    load_into(net, params, args.ckpt_file, f'{args.export_model} at image size {image_size}')
    net.set_train(False)

    shape = (args.batch_size, 3, image_size, image_size)
    base = args.file_name or args.export_model
    out = base + SUFFIX[args.file_format]

    def _export(tmp):
        # MindSpore adds the suffix itself; export beside the temp name and move it over
        ms.export(net, Tensor(np.zeros(shape, np.float32)), file_name=tmp, file_format=args.file_format)
        os.replace(tmp + SUFFIX[args.file_format], tmp)
    atomic_write(out, _export)
    print(f'exported {args.export_model} ({num_classes} classes, input {list(shape)}) to {out}')

    if args.verify and args.file_format != 'AIR':
        verify(net, out, shape, args.file_format)
    return 0


def verify(net, out, shape, file_format):
    """Run the exported file (MindSpore GraphCell / onnxruntime) against the network on one random batch."""
    import numpy as np
    import mindspore as ms
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    expected = net(ms.Tensor(x)).asnumpy()
    if file_format == 'MINDIR':
        got = ms.nn.GraphCell(ms.load(out))(ms.Tensor(x)).asnumpy()
    else:
        import onnxruntime as ort
        sess = ort.InferenceSession(out, providers=['CPUExecutionProvider'])
        got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    diff = float(np.abs(got - expected).max())
    scale = float(np.abs(expected).max()) or 1.0
    print(f'verify {file_format}: max abs diff {diff:.3e} (output scale {scale:.3e})')
    if diff > 1e-4 * max(1.0, scale):
        raise ValueError(f'{out}: exported model disagrees with the network (max abs diff {diff:.3e})')


if __name__ == '__main__':
    cli.run(main, errors=(CheckpointError, ValueError))
