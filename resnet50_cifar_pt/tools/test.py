"""Evaluate a checkpoint (mmcls ``tools/test.py``): one process, or several under torchrun (``tools/dist_test.sh``).

    python tools/test.py CONFIG CHECKPOINT [--metrics accuracy] [--data-path DIR] [--out results.json|.pkl]
    bash tools/dist_test.sh CONFIG CHECKPOINT N [test.py args]        (--launcher pytorch, gloo on CPU)

Prints ``accuracy_top-1`` / ``accuracy_top-5`` (percent, as mmcls logs them) and ``Eval Accuracy`` (top-1
as a fraction, the figure of the training banner). The checkpoint is read with ``weights_only=True``.
``--out`` dumps what the original dumps (the metrics plus ``--out-items``: class_scores, pred_score, pred_label,
pred_class; format by extension, mmcv.dump) and three keys of ours: checkpoint, config, num_images.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[1]
for p in (RECIPE, RECIPE.parent):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from common import cli  # noqa: E402
from mmcls_ext.cli import ERRORS  # noqa: E402

OUT_ITEMS = ["class_scores", "pred_score", "pred_label", "pred_class"]


def parse_args(argv=None):
    from mmcv import DictAction
    parser = argparse.ArgumentParser(description="Evaluate a classifier checkpoint (mmcls config)")
    parser.add_argument("config", help="test config file path")
    parser.add_argument("checkpoint", help="checkpoint file (epoch_N.pth / latest.pth, or an mmcls checkpoint)")
    parser.add_argument("--out", help="output result file (.json, .pkl or .yaml, written by mmcv.dump)")
    parser.add_argument("--out-items", nargs="+", default=["all"], choices=OUT_ITEMS + ["none", "all"],
                        metavar="", help="besides the metrics, what --out holds: some of "
                        f"({', '.join(OUT_ITEMS)}), 'all' (default) or 'none'")
    parser.add_argument("--metrics", nargs="+", default=["accuracy"],
                        help="evaluation metrics: accuracy, precision, recall, f1_score, support")
    parser.add_argument("--show", action="store_true", help="show each image with its prediction (needs a display)")
    parser.add_argument("--show-dir", help="directory where the painted images are saved (<index>.png)")
    parser.add_argument("--gpu-collect", action="store_true",
                        help="collect the ranks' results through the process group instead of files in --tmpdir "
                             "(on CPU through gloo)")
    parser.add_argument("--tmpdir", help="folder for the ranks' partial results (default: a new folder in .dist_test)")
    parser.add_argument("--metric-options", nargs="+", action=DictAction, default={},
                        help="e.g. topk=1,5 for accuracy")
    parser.add_argument("--show-options", nargs="+", action=DictAction,
                        help="options of model.show_result, key=value (font_scale, text_color, fig_size, ...)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction,
                        help="override settings in the config, key=value pairs")
    parser.add_argument("--work-dir", help="also write the metrics to <work-dir>/eval_<time>.json "
                                           "(not a flag of the original test.py; mmcls 1.x's)")
    parser.add_argument("--data-path", help="cifar-100-python folder or a folder holding it")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "gpu", "npu"])
    parser.add_argument("--gpu-id", type=int, default=0, help="id of the device to use (1 process)")
    parser.add_argument("--launcher", choices=["none", "pytorch"], default="none",
                        help="job launcher; 'pytorch' reads RANK/WORLD_SIZE/LOCAL_RANK as set by torchrun")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0, help="set by torch.distributed.launch")
    args = parser.parse_args(argv)
    if "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(args.local_rank)
    return args


def main(argv=None) -> int:
    return evaluate(parse_args(argv))


def _check_show(args) -> None:
    # mmcv's imshow opens a window: without a display it would die deep inside matplotlib/OpenCV
    if args.show and os.name != "nt" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise cli.RecipeError("--show needs a display (DISPLAY is not set); use --show-dir DIR to save the "
                              "painted images instead")


def _dist_tmpdir(args, rank):
    """The folder every rank writes its part to: --tmpdir, or (as mmcls) a new folder under .dist_test made by
    rank 0 and sent to the others; mmcls sends its name as a CUDA tensor, here through the job's own backend."""
    import tempfile
    import torch.distributed as dist
    if args.tmpdir:
        return args.tmpdir
    box = [None]
    if rank == 0:
        os.makedirs(".dist_test", exist_ok=True)
        box[0] = os.path.abspath(tempfile.mkdtemp(dir=".dist_test"))
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _collect_through_group(part, size):
    """--gpu-collect on any backend: every rank's list of per-image scores to rank 0, put back in dataset order.
    mmcls' DistributedSampler (shuffle off) deals index i to rank i % world, so interleaving restores the order;
    the padding that evened the shares is cut off at ``size``."""
    import torch.distributed as dist
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, part)
    if dist.get_rank() != 0:
        return None
    ordered = [r for group in zip(*parts) for r in group]
    return ordered[:size]


def _run_distributed(model, loader, args, device):
    import torch
    import torch.distributed as dist
    from mmcls.apis import multi_gpu_test
    from mmcls.apis.test import collect_results_cpu
    if device == "cuda":  # mmcls' own path, as the original
        return multi_gpu_test(model, loader, _dist_tmpdir(args, dist.get_rank()) if not args.gpu_collect else None,
                              args.gpu_collect)
    # mmcls' multi_gpu_test puts its collection buffers on CUDA; the loop is the same, the collection is gloo's
    model.eval()
    part = []
    for data in loader:
        with torch.no_grad():
            part.extend(model(return_loss=False, **data))
    if args.gpu_collect:
        return _collect_through_group(part, len(loader.dataset))
    return collect_results_cpu(part, len(loader.dataset), _dist_tmpdir(args, dist.get_rank()))


def _paint(model, loader, outputs, args, classes, img_norm_cfg):
    """--show / --show-dir: each test image with its top class drawn by the model's own show_result. mmcls'
    single_gpu_test reads img_shape/ori_shape/ori_filename from the image metas, which CIFAR's pipeline has not
    (KeyError in the original); the image is the denormalised tensor and the file is named by its index."""
    import numpy as np
    from mmcv.image import tensor2imgs
    net = model.module if hasattr(model, "module") else model
    kwargs = dict(args.show_options or {})
    index = 0
    for data in loader:
        imgs = tensor2imgs(data["img"], **img_norm_cfg)
        for img in imgs:
            scores = np.asarray(outputs[index])
            label = int(np.argmax(scores))
            shown = dict(pred_score=float(scores[label]), pred_label=label, pred_class=classes[label])
            out_file = os.path.join(args.show_dir, f"{index:05d}.png") if args.show_dir else None
            net.show_result(np.ascontiguousarray(img), shown, show=args.show, out_file=out_file, **kwargs)
            index += 1


def _dump(obj, path):
    """mmcv.dump's format (by extension) written to a temp file and renamed: no half-written results."""
    import mmcv
    from common.checkpoint import atomic_write
    atomic_write(path, lambda tmp: mmcv.dump(obj, tmp, file_format=Path(path).suffix.lstrip(".") or "json"))


def evaluate(args) -> int:
    import numpy as np
    from mmcv.runner import get_dist_info
    from mmcls.apis import single_gpu_test
    from mmcls.datasets import build_dataloader, build_dataset
    from mmcls.models import build_classifier
    from mmcls.utils import wrap_non_distributed_model

    import mmcls_ext  # noqa: F401  (CIFAR100Local, weights_only checkpoint loader)
    from mmcls_ext.checkpoint import load_weights, safe_load
    from mmcls_ext.cli import load_config
    from mmcls_ext.training import init_processes

    cfg = load_config(args.config, args.cfg_options)
    if args.data_path:
        cfg.data.test.data_prefix = args.data_path
    if args.out and Path(args.out).suffix.lstrip(".") not in ("json", "pkl", "pickle", "yaml", "yml"):
        raise cli.RecipeError(f"{args.out}: --out must end in .json, .pkl or .yaml (mmcv.dump's formats)")
    _check_show(args)
    dataset = build_dataset(cfg.data.test, dict(test_mode=True))
    saved = safe_load(args.checkpoint)  # fail with the file's name before any process group or model is made
    device, distributed, local_index, rank, world = init_processes(args)

    # round_up as the original: every rank gets the same number of images (padding cut off when collected)
    loader = build_dataloader(dataset, samples_per_gpu=int(cfg.data.samples_per_gpu), workers_per_gpu=0,
                              dist=distributed, shuffle=False, round_up=True, pin_memory=False,
                              persistent_workers=False)
    model = build_classifier(cfg.model)
    ckpt = load_weights(model, args.checkpoint, f"the model of {args.config}", saved)
    classes = ckpt.get("meta", {}).get("CLASSES", dataset.CLASSES)
    model.CLASSES = classes
    if not distributed:
        model = wrap_non_distributed_model(model, device, device_ids=[local_index])
        outputs = single_gpu_test(model, loader)
        if args.show or args.show_dir:
            _paint(model, loader, outputs, args, classes, cfg.get("img_norm_cfg", dict(mean=[0.0] * 3, std=[1.0] * 3,
                                                                                     to_rgb=False)))
    else:
        if args.show or args.show_dir:
            print("--show/--show-dir: 1-process testing only (as the original); ignored under --launcher pytorch")
        # inference needs no gradient all-reduce: each rank runs its own copy on its own device
        model = wrap_non_distributed_model(model, device, device_ids=[local_index])
        outputs = _run_distributed(model, loader, args, device)

    rank, _ = get_dist_info()
    if rank == 0:
        results = dataset.evaluate(outputs, args.metrics, args.metric_options)
        for k, v in results.items():
            if np.ndim(v):
                print(f"{k} : {[round(float(x), 4) for x in np.ravel(v)]}")
            else:
                print(f"{k} : {float(v):.4f}")
        if "accuracy_top-1" in results:
            print(f"Eval Accuracy : {float(results['accuracy_top-1']) / 100:.4f}")
        record = {"checkpoint": str(Path(args.checkpoint).resolve()), "config": str(Path(args.config).resolve()),
                  "num_images": len(dataset),
                  **{k: (np.asarray(v).tolist() if np.ndim(v) else float(v)) for k, v in results.items()}}
        if args.work_dir:
            _dump(record, Path(args.work_dir) / f"eval_{time.strftime('%Y%m%d_%H%M%S')}.json")
        if args.out:
            if "none" not in args.out_items:
                scores = np.vstack(outputs)
                labels = np.argmax(scores, axis=1)
                items = {"class_scores": scores, "pred_score": np.max(scores, axis=1), "pred_label": labels,
                         "pred_class": [classes[i] for i in labels]}
                keep = OUT_ITEMS if "all" in args.out_items else args.out_items
                record.update({k: items[k] for k in keep})
            print(f"dumping results to {args.out}")
            _dump(record, args.out)
    if distributed:
        import torch.distributed as dist
        dist.barrier()  # no rank leaves (and tears the group down) while rank 0 still writes
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    cli.run(main, errors=ERRORS)
