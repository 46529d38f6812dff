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


def _is_image(name) -> bool:
    return os.path.splitext(name)[1].lower() in IMG_EXTS


def _images_of(folder):
    """Image files under ``folder`` (recursively), in a sorted, host-independent order."""
    return [os.path.join(dirpath, f) for dirpath, _, files in sorted(os.walk(folder)) for f in sorted(files)
            if _is_image(f)]


def _class_folders(root: Path):
    """Sorted names of ``root``'s non-hidden sub-folders, the candidate classes."""
    folders = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not folders:
        raise ImageFolderError(f"{root}: no class folders")
    return folders


def class_names(root):
    """The class names ``list_images`` numbers for ``root`` (sorted non-hidden folders holding an image), without
    listing every image: each folder is read only up to its first image (a model's head size is known before the
    data is listed)."""
    root = Path(root)
    folders = _class_folders(root)
    names = [name for name in folders if any(any(map(_is_image, files)) for _, _, files in os.walk(root / name))]
    if not names:
        raise ImageFolderError(f"{root}: class folders contain no images")
    return names


def list_images(root, max_classes=None, classes=None, log=print):
    """Class folders -> ``(samples [(path, label)], class_names)``; errors name the folder.

    Without ``classes`` the labels number this split's non-empty class folders in sorted order (training).
    With ``classes`` (the names training numbered; label = index) each folder is labelled by its name, so
    an extra, missing or empty folder in one split cannot shift the labels of the other: a folder holding
    images under a name training never saw stops with its path. A class folder with no image in it (a
    ``lost+found``, an unfinished download) is reported through ``log`` and left out, in both cases, so
    train and val agree whichever split has it.
    """
    root = Path(root)
    folders = _class_folders(root)
    files = {}
    for name in folders:
        found = _images_of(root / name)
        if found:
            files[name] = found
        else:
            log(f"{root / name}: class folder holds no image; left out of the class numbering")
    if classes is None:
        classes = sorted(files)
        if max_classes:
            classes = classes[:max_classes]
    else:
        classes = list(classes)
        unknown = [name for name in files if name not in classes]
        if unknown:
            raise ImageFolderError(f"{root / unknown[0]}: class folder not among the {len(classes)} classes the "
                                   f"model was trained on ({len(unknown)} such folder(s) in {root})")
    labels = {name: i for i, name in enumerate(classes)}
    samples = [(path, labels[name]) for name in sorted(files) if name in labels for path in files[name]]
    if not samples:
        raise ImageFolderError(f"{root}: class folders contain no images")
    return samples, classes


CLASSES_KEY = "zoo_class_names"  # the checkpoint entry that carries the class names of training


def encode_classes(classes):
    """Class names -> a uint8 array (UTF-8 JSON), storable in any framework's checkpoint as a tensor."""
    import json

    import numpy as np
    return np.frombuffer(json.dumps(list(classes)).encode("utf-8"), dtype=np.uint8).copy()


def decode_classes(array, where="checkpoint"):
    """The inverse of ``encode_classes``; a damaged entry stops with ``where`` named."""
    import json

    import numpy as np
    try:
        names = json.loads(np.asarray(array, dtype=np.uint8).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ImageFolderError(f"{where}: damaged {CLASSES_KEY} entry ({exc})") from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ImageFolderError(f"{where}: damaged {CLASSES_KEY} entry (not a list of names)")
    return names


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
