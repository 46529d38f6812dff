#!/usr/bin/env python3
"""Write the embedded default dataset (scikit-learn's handwritten digits) in the three real formats.

    data/digits/cifar-10-batches-py/   data_batch_1..5, test_batch, batches.meta
    data/digits/cifar-100-python/      train, test, meta (fine labels = digit, coarse = digit // 5)
    data/digits/imagenet/{train,val}/<wnid>/*.JPEG

The digits are real images (1,797 of them, 8x8, 17 grey levels) that ship inside scikit-learn, so a
recipe that learns must beat chance by a wide margin. They are upscaled bilinearly to 32x32 RGB for
the CIFAR layouts and to 64x64 JPEGs for the ImageNet layout. The split is fixed: a seeded
permutation puts 1,497 images in train and 300 in test. Output is byte-for-byte deterministic.

``--noise`` writes random-noise data of the same formats instead (format and edge-case tests only).
"""
from __future__ import annotations

import argparse
import io
import pickle
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
N_TEST = 300
WNIDS = [f"n{9000000 + i:08d}" for i in range(10)]  # ImageNet-style synset ids for the 10 digits


def _dump(obj, path: Path) -> None:
    # str keys load as str under encoding='latin1', as with the official files; protocol 4 stores the
    # array bytes directly (protocol 2 from Python 3 would wrap them in _codecs.encode calls)
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=4)


def _resize(gray8: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image
    img = Image.fromarray(gray8, mode="L").resize((size, size), Image.BILINEAR)
    return np.asarray(img)


def digits_images(size: int):
    """(images uint8 [N,size,size,3], labels int64 [N]) from scikit-learn's digits, and the split index."""
    from sklearn.datasets import load_digits
    d = load_digits()
    gray = np.clip(np.round(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    imgs = np.stack([_resize(g, size) for g in gray])
    rgb = np.repeat(imgs[..., None], 3, axis=-1)
    perm = np.random.RandomState(0).permutation(len(rgb))
    test_idx, train_idx = np.sort(perm[:N_TEST]), np.sort(perm[N_TEST:])
    return rgb, d.target.astype(np.int64), train_idx, test_idx


def noise_images(n_train: int, n_test: int, size: int, num_classes: int, seed: int):
    rs = np.random.RandomState(seed)
    n = n_train + n_test
    imgs = rs.randint(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    labels = rs.randint(0, num_classes, size=n).astype(np.int64)
    return imgs, labels, np.arange(n_train), np.arange(n_train, n)


def _rows(imgs: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(imgs.transpose(0, 3, 1, 2).reshape(len(imgs), 3072))  # CHW rows of 3072


def write_cifar10(out: Path, imgs, labels, train_idx, test_idx, tag: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(np.array_split(train_idx, 5), start=1):
        _dump({"batch_label": f"training batch {i} of 5 ({tag})", "labels": [int(v) for v in labels[part]],
               "data": _rows(imgs[part]), "filenames": [f"{tag}_{j:05d}.png" for j in part]}, out / f"data_batch_{i}")
    _dump({"batch_label": f"testing batch 1 of 1 ({tag})", "labels": [int(v) for v in labels[test_idx]],
           "data": _rows(imgs[test_idx]), "filenames": [f"{tag}_{j:05d}.png" for j in test_idx]}, out / "test_batch")
    _dump({"num_cases_per_batch": int(len(train_idx) // 5), "label_names": [f"digit_{i}" for i in range(10)],
           "num_vis": 3072}, out / "batches.meta")


def write_cifar100(out: Path, imgs, labels, train_idx, test_idx, tag: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for split, idx in (("train", train_idx), ("test", test_idx)):
        _dump({"filenames": [f"{tag}_{j:05d}.png" for j in idx], "batch_label": f"{split} ({tag})",
               "fine_labels": [int(v) for v in labels[idx]], "coarse_labels": [int(v) // 5 for v in labels[idx]],
               "data": _rows(imgs[idx])}, out / split)
    # 100 fine / 20 coarse names as in the real meta; only the first 10 / 2 are used by the digits
    _dump({"fine_label_names": [f"digit_{i}" for i in range(10)] + [f"unused_{i}" for i in range(10, 100)],
           "coarse_label_names": ["digits_0_4", "digits_5_9"] + [f"unused_{i}" for i in range(2, 20)]}, out / "meta")


def write_imagenet(out: Path, imgs, labels, train_idx, test_idx, num_classes: int) -> None:
    from PIL import Image
    for split, idx in (("train", train_idx), ("val", test_idx)):
        for c in range(num_classes):
            (out / split / WNIDS[c]).mkdir(parents=True, exist_ok=True)
        for j in idx:
            buf = io.BytesIO()
            Image.fromarray(imgs[j]).save(buf, format="JPEG", quality=95)
            (out / split / WNIDS[labels[j]] / f"{WNIDS[labels[j]]}_{j:05d}.JPEG").write_bytes(buf.getvalue())


def _stamp(*args) -> str:
    """Identifies the builder version and arguments, so an unchanged dataset is not rewritten."""
    import hashlib
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(repr([sorted(a) if isinstance(a, set) else a for a in args]).encode())
    return h.hexdigest()[:16]


def build(out_root: Path, noise: bool, seed: int, n_train: int, n_test: int, formats, imagenet_size: int = 64):
    """Write the dataset to ``out_root``; returns it, or None when an identical build is already there."""
    tag = "noise" if noise else "digits"
    stamp = _stamp(noise, seed, n_train, n_test, formats, imagenet_size)
    if (out_root / ".stamp").is_file() and (out_root / ".stamp").read_text().strip() == stamp:
        return None
    # write into a temporary sibling, then swap in: an interrupted build never leaves half a dataset
    out_root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_root.name}.", dir=out_root.parent))
    try:
        if "cifar10" in formats or "cifar100" in formats:
            imgs, labels, tr, te = (noise_images(n_train, n_test, 32, 10, seed) if noise else digits_images(32))
            if "cifar10" in formats:
                write_cifar10(tmp / "cifar-10-batches-py", imgs, labels, tr, te, tag)
            if "cifar100" in formats:
                write_cifar100(tmp / "cifar-100-python", imgs, labels, tr, te, tag)
        if "imagenet" in formats:
            imgs, labels, tr, te = (noise_images(n_train, n_test, imagenet_size, 10, seed) if noise
                                    else digits_images(imagenet_size))
            write_imagenet(tmp / "imagenet", imgs, labels, tr, te, 10)
        (tmp / ".stamp").write_text(stamp + "\n")
        # swap in with renames only, so readers never see a missing or half-written folder
        old = out_root.with_name(f".{out_root.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if out_root.exists():
            out_root.rename(old)
        tmp.rename(out_root)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_root


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="output folder (default data/digits, or data/noise with --noise)")
    ap.add_argument("--noise", action="store_true", help="random-noise images of the same formats")
    ap.add_argument("--seed", type=int, default=0, help="noise seed")
    ap.add_argument("--n_train", type=int, default=100, help="noise: training images")
    ap.add_argument("--n_test", type=int, default=20, help="noise: test images")
    ap.add_argument("--formats", default="cifar10,cifar100,imagenet")
    ap.add_argument("--imagenet_size", type=int, default=64,
                    help="side of the ImageNet-layout JPEGs (benchmarks use real sizes, e.g. 320)")
    args = ap.parse_args(argv)
    formats = set(args.formats.split(","))
    if formats - {"cifar10", "cifar100", "imagenet"}:
        ap.error(f"unknown format(s): {sorted(formats - {'cifar10', 'cifar100', 'imagenet'})}")
    out = Path(args.out) if args.out else ROOT / "data" / ("noise" if args.noise else "digits")
    if args.imagenet_size < 8 or args.n_train < 1 or args.n_test < 1:
        ap.error("--imagenet_size must be >= 8 and --n_train/--n_test >= 1")
    if build(out, args.noise, args.seed, args.n_train, args.n_test, formats, args.imagenet_size) is None:
        print(f"make_data: {out} is up to date")
    else:
        print(f"make_data: wrote {', '.join(sorted(formats))} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
