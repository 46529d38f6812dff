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
    try:  # what the training readers check per image, so that vetting never passes a file they refuse
        with open(path, "rb") as f:
            problem = encoded_problem(f.read())
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if problem:
        return problem
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


def encoded_problem(data) -> str:
    """'' when the bytes of an image file look whole, else why not, in a few words: what a reader can afford to
    check per image as it hands the encoded bytes to a framework's decoder (``vet_images`` decodes fully).

    JPEG, PNG and BMP: the signature, and for JPEG and PNG the end marker near the end (a file cut short). JPEG
    also: the marker segments before the image data, walked and checked for what the decoder relies on (lengths
    inside the file, table definitions, frame and scan headers). Why: MindSpore 2.10's C++ decoder crashes the
    whole process (SIGSEGV, SIGFPE) on many broken JPEG headers, e.g. a Huffman table claiming more codes than its
    segment holds, so a run without the full vetting died without a line; with this check the reader names the
    file first.
    """
    data = bytes(data)  # one copy of an encoded file (~0.1 MB for ImageNet): microseconds
    if not data:
        return "zero-byte file"
    if data[:2] == b"\xff\xd8":
        problem, scan = _jpeg_header_problem(data)
        if problem:
            return problem
        # the end marker anywhere after the first scan header: the compressed data cannot hold FF D9 (a file
        # may carry more after it, e.g. a phone's motion photo; an embedded thumbnail's sits before the scan)
        return "" if data.find(b"\xff\xd9", scan) >= 0 else "cannot decode (cut short: no JPEG end marker)"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "" if b"IEND" in data[-1024:] else "cannot decode (cut short: no PNG end chunk)"
    if data[:2] == b"BM":
        return ""
    return "cannot decode (not a JPEG, PNG or BMP file)"


def _jpeg_header_problem(head: bytes) -> tuple:
    """The marker-segment checks of ``encoded_problem``, from the start of image to the first scan header: the
    rules of ITU-T T.81 annex B that libjpeg enforces. ``ci/jpeg_fuzz.py --count 1200 --seed 2`` (random damage
    to the headers of 9 kinds of JPEG, against MindSpore 2.10's ``Decode`` and Pillow): 165 crashed MindSpore,
    all 165 refused here; none of the 803 that both decode refused. None of 1,827 valid JPEGs on the machine.
    Returns (the problem or '', the offset of the first scan header)."""
    def bad(what):
        return f"cannot decode (corrupt JPEG header: {what})", 0

    pos, frame, progressive, arithmetic, quant, huffman = 2, None, False, False, set(), set()
    while True:
        if pos < len(head) and head[pos] != 0xFF:  # stray bytes: the decoder skips to the next marker, so do we
            nxt = head.find(b"\xff", pos)
            pos = len(head) if nxt < 0 else nxt
        while pos + 1 < len(head) and head[pos + 1] == 0xFF:
            pos += 1  # fill bytes before a marker
        if pos + 4 > len(head):
            return bad("it ends before the image data")
        marker = head[pos + 1]
        if marker in (0x00, 0x01):  # FF00: stray data, skipped as above; TEM: a marker without a length
            pos += 2
            continue
        if marker in (0xD8, 0xD9) or 0xD0 <= marker <= 0xD7:
            return bad(f"marker 0x{marker:02X} before the image data")
        length = int.from_bytes(head[pos + 2:pos + 4], "big")
        body = head[pos + 4:pos + 2 + length]
        if length < 2:
            return bad(f"segment 0x{marker:02X} at byte {pos} of length {length}")
        if pos + 2 + length > len(head):
            return bad(f"segment 0x{marker:02X} at byte {pos} runs past the end ({length} bytes)")
        if marker == 0xDB:  # DQT: tables of 64 values, 8- or 16-bit, ids 0-3
            at = 0
            while at < len(body):
                precision, table = body[at] >> 4, body[at] & 0x0F
                if precision > 1 or table > 3 or at + 1 + 64 * (precision + 1) > len(body):
                    return bad(f"quantisation table at byte {pos}")
                quant.add(table)
                at += 1 + 64 * (precision + 1)
        elif marker == 0xC4:  # DHT: class/id, 16 counts, that many symbols (DC ones at most 15)
            at = 0
            while at < len(body):
                if at + 17 > len(body) or body[at] >> 4 > 1 or body[at] & 0x0F > 3:
                    return bad(f"Huffman table at byte {pos}")
                count = sum(body[at + 1:at + 17])
                symbols = body[at + 17:at + 17 + count]
                if count > 256 or len(symbols) < count:
                    return bad(f"Huffman table at byte {pos} claims {count} codes")
                if body[at] >> 4 == 0 and max(symbols, default=0) > 15:
                    return bad(f"Huffman table at byte {pos}: DC symbol {max(symbols)}")
                huffman.add((body[at] >> 4, body[at] & 0x0F))
                at += 17 + count
        elif marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):  # SOFn
            n = body[5] if len(body) > 5 else 0
            if frame is not None or not 1 <= n <= 4 or len(body) != 6 + 3 * n or body[0] not in (8, 12, 16):
                return bad(f"frame header at byte {pos}")
            height, width = int.from_bytes(body[1:3], "big"), int.from_bytes(body[3:5], "big")
            comps = [body[6 + 3 * i:9 + 3 * i] for i in range(n)]
            if height == 0 or width == 0 or len({c[0] for c in comps}) < n or any(
                    not 1 <= c[1] >> 4 <= 4 or not 1 <= c[1] & 0x0F <= 4 or c[2] > 3 for c in comps):
                return bad(f"frame header at byte {pos} ({width}x{height}, {n} components)")
            frame, progressive = {c[0]: c[2] for c in comps}, marker in (0xC2, 0xC6)
            arithmetic = marker >= 0xC9  # SOF9-15: no Huffman tables
        elif marker == 0xDA:  # SOS: the image data follows
            n = body[0] if body else 0
            if frame is None:
                return bad("image data before the frame header")
            if not 1 <= n <= 4 or length != 6 + 2 * n:
                return bad(f"scan header at byte {pos}")
            first, last, refine, point = body[1 + 2 * n], body[2 + 2 * n], body[3 + 2 * n] >> 4, body[3 + 2 * n] & 15
            if progressive and (last > 63 or first > last or (first == 0) != (last == 0) or (first and n != 1)
                                or refine > 13 or point > 13):
                return bad(f"scan header at byte {pos}: progressive parameters {first}-{last}, {refine}/{point}")
            for i in range(n):
                cid, tables = body[1 + 2 * i], body[2 + 2 * i]
                if cid not in frame or frame[cid] not in quant:
                    return bad(f"scan header at byte {pos}: component {cid} has no frame entry or table")
                # tables 0 and 1 of a sequential frame may be missing (Motion-JPEG has no DHT): the decoder then
                # uses the standard ones; a progressive frame has no such fallback. A progressive scan uses the
                # DC table in a first DC scan only, the AC table in a first AC scan only.
                uses_dc = not progressive or (first == 0 and refine == 0)
                uses_ac = not progressive or (first > 0 and refine == 0)
                dc, ac = tables >> 4, tables & 0x0F
                if not arithmetic and ((uses_dc and (0, dc) not in huffman and (progressive or dc > 1))
                                       or (uses_ac and (1, ac) not in huffman and (progressive or ac > 1))):
                    return bad(f"scan header at byte {pos}: Huffman table of component {cid} not defined")
            return "", pos
        pos += 2 + length


def reader_error_line(exc):
    """The one line of an :class:`ImageFolderError` that a reader raised inside a framework's data pipeline, or
    None. MindSpore hands it back as a RuntimeError holding the Python call stack, where the error's name appears
    twice: once before the worker's traceback, once before the message (``...ImageFolderError: <file>: <why>``)."""
    if not isinstance(exc, RuntimeError):
        return None
    found = None
    for line in str(exc).splitlines():
        message = line.split("ImageFolderError:", 1)[1].strip() if "ImageFolderError:" in line else ""
        if message and not message.startswith("Traceback"):
            found = message
    return found


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
