"""ImageNet-style folders (``train/<wnid>/*.JPEG``, ``val/<wnid>/*.JPEG``): locate, list and vet images.

Bad files (zero-byte, truncated, corrupt, PNG named .JPEG, CMYK) are found before training starts so
the user gets the path, not a crash deep inside a framework's decoder. Policy: stop at the first bad
file (default) or ``skip_bad=True`` to drop and report each one.
"""
from __future__ import annotations

import os
from pathlib import Path

IMG_EXTS = {".jpeg", ".jpg", ".png", ".bmp"}


class ImageFolderError(ValueError):
    pass


def resolve_split(path, split: str) -> Path:
    """``path`` may be the split folder itself (holding class folders) or its parent (holding ``split``)."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise ImageFolderError(f"{p}: data path does not exist or is not a directory")
    for cand in (p / split, p / "imagenet" / split):
        if cand.is_dir():
            return cand
    if any(c.is_dir() for c in p.iterdir()) and not (p / "train").exists():
        return p
    raise ImageFolderError(f"{p}: no '{split}' folder and no class folders here")


def list_images(root, max_classes=None):
    """Sorted class folders -> ``(samples [(path, label)], class_names)``; errors name the folder."""
    root = Path(root)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ImageFolderError(f"{root}: no class folders")
    if max_classes:
        classes = classes[:max_classes]
    samples = []
    for label, c in enumerate(classes):
        for dirpath, _, files in sorted(os.walk(root / c)):
            for f in sorted(files):
                if os.path.splitext(f)[1].lower() in IMG_EXTS:
                    samples.append((os.path.join(dirpath, f), label))
    if not samples:
        raise ImageFolderError(f"{root}: class folders contain no images")
    return samples, classes


def check_image(path) -> str:
    """'' if the file decodes as a JPEG/PNG/BMP image, else the problem in a few words."""
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if size == 0:
        return "zero-byte file"
    from PIL import Image  # lazy: common/ itself needs only numpy
    try:
        with Image.open(path) as im:
            fmt = im.format
            im.load()  # full decode: verify() misses truncated JPEG data
            mode = im.mode
    except Exception as exc:  # PIL raises many types for bad data
        return f"cannot decode ({type(exc).__name__}: {str(exc)[:80]})"
    ext = os.path.splitext(path)[1].lower()
    if ext in (".jpeg", ".jpg") and fmt != "JPEG":
        return f"named {ext} but is {fmt}"
    if mode not in ("RGB", "L", "CMYK", "P", "RGBA", "LA", "I;16", "I", "YCbCr"):
        return f"unsupported colour mode {mode}"
    return ""


def vet_images(samples, skip_bad: bool = False, log=print):
    """Check every sample; returns the good ones. Without ``skip_bad`` the first bad file raises."""
    good, bad = [], []
    for path, label in samples:
        problem = check_image(path)
        if not problem:
            good.append((path, label))
            continue
        if not skip_bad:
            raise ImageFolderError(f"{path}: {problem} (use --skip_bad_images to skip such files)")
        log(f"skipping bad image {path}: {problem}")
        bad.append((path, problem))
    if bad:
        log(f"skipped {len(bad)} bad image(s) of {len(samples)}")
    if not good:
        raise ImageFolderError("no readable images left after skipping bad ones")
    return good, bad
