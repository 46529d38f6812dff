#!/usr/bin/env python3
"""Random JPEG header damage against MindSpore's decoder and ``common.imagefolder.encoded_problem``.

    .envs/mindspore/bin/python ci/jpeg_fuzz.py [--count 1200] [--seed 2] [--out DIR]

MindSpore 2.10's ``Decode`` kills the whole process (SIGSEGV, SIGFPE, SIGABRT) on many broken JPEG headers
instead of raising, so the MindSpore recipes' readers walk each file's header first. This measures that check:
it writes ``--count`` copies of nine JPEG kinds (baseline, progressive, optimised, restart markers, 4:2:2,
grayscale, CMYK, a multi-segment ICC profile, Motion-JPEG without Huffman tables) with 1-3 random bytes of their
headers changed, decodes each with MindSpore in a child process (one file at a time, a new child after each
crash), and with Pillow, and prints how the check's verdicts fall against both decoders. Exit 1 when a file
that crashes MindSpore passes the check. RELIABILITY.md quotes its figures.
"""
from __future__ import annotations

import argparse
import collections
import io
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from common.imagefolder import encoded_problem  # noqa: E402
from common.testing import pillow_decodes  # noqa: E402

CHILD = """
import sys, numpy as np
import mindspore.dataset.vision as vision
decode = vision.Decode()
for line in sys.stdin:
    path = line.strip()
    print('BEGIN', flush=True)
    try:
        decode(np.fromfile(path, np.uint8))
        print('ok', flush=True)
    except Exception:
        print('err', flush=True)
"""


def seed_jpegs() -> list:
    """The nine kinds, from one noise image (Pillow's encoder, its standard or optimised tables)."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    kinds = [("RGB", {}), ("RGB", dict(progressive=True)), ("RGB", dict(optimize=True)),
             ("RGB", dict(restart_marker_blocks=1)), ("RGB", dict(subsampling=1)), ("L", dict(progressive=True)),
             ("CMYK", {}), ("RGB", dict(icc_profile=bytes(range(256)) * 600))]
    out = []
    for mode, kw in kinds:
        buf = io.BytesIO()
        rgb.convert(mode).save(buf, "JPEG", **kw)
        out.append(buf.getvalue())
    out.append(_without_huffman_tables(out[0]))
    return out


def _without_huffman_tables(data: bytes) -> bytes:
    pos, kept = 2, [data[:2]]
    while data[pos + 1] != 0xDA:
        end = pos + 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        if data[pos + 1] != 0xC4:
            kept.append(data[pos:end])
        pos = end
    return b"".join(kept) + data[pos:]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """1-3 bytes of the headers (start of image to the end of the first scan header) set at random."""
    b = bytearray(data)
    end = data.find(b"\xff\xda") + 14
    for _ in range(rng.choice([1, 1, 2, 3])):
        k = rng.randrange(2, end)
        b[k] = rng.choice([rng.randrange(256), 0xFF, 0x00, b[k] ^ (1 << rng.randrange(8))])
    return bytes(b)


def mindspore_verdicts(paths: list) -> list:
    """'ok', 'err' (raised) or 'crash' (the child died) per file."""
    verdicts, todo = [], list(paths)
    while todo:
        proc = subprocess.run([sys.executable, "-c", CHILD], input="\n".join(todo) + "\n", capture_output=True,
                              text=True)
        lines = [x for x in proc.stdout.split() if x in ("BEGIN", "ok", "err")]
        if not lines:
            raise RuntimeError(f"the decoding child decoded nothing: {proc.stderr.strip()[-500:]}")
        done = lines.count("ok") + lines.count("err")
        verdicts += [x for x in lines if x != "BEGIN"]
        if done == len(todo):
            break
        verdicts.append("crash")  # the file the child began and never finished
        todo = todo[done + 1:]
    return verdicts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=1200)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--out", help="write the per-file results here (JSON)")
    args = ap.parse_args(argv)
    rng, seeds = random.Random(args.seed), seed_jpegs()
    assert all(not encoded_problem(s) and pillow_decodes(s) for s in seeds), "a seed JPEG is refused"
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i in range(args.count):
            path = Path(tmp) / f"{i:05d}.jpg"
            path.write_bytes(mutate(seeds[i % len(seeds)], rng))
            files.append(path)
        ms = mindspore_verdicts([str(p) for p in files])
        rows = [{"file": i, "mindspore": m, "pillow": "ok" if pillow_decodes(p.read_bytes()) else "err",
                 "refused": encoded_problem(p.read_bytes())} for i, (p, m) in enumerate(zip(files, ms))]
    table = collections.Counter((r["mindspore"], r["pillow"], bool(r["refused"])) for r in rows)
    print(f"{args.count} header mutations of {len(seeds)} JPEG kinds (seed {args.seed}):")
    print("| MindSpore Decode | Pillow | refused by encoded_problem | files |\n|---|---|---|---|")
    for (m, p, refused), n in sorted(table.items()):
        print(f"| {m} | {p} | {'yes' if refused else 'no'} | {n} |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")
    escaped = [r for r in rows if r["mindspore"] == "crash" and not r["refused"]]
    crashes = sum(r["mindspore"] == "crash" for r in rows)
    print(f"crashed MindSpore: {crashes}; of those passed by the check: {len(escaped)}")
    return 1 if escaped else 0


if __name__ == "__main__":
    sys.exit(main())
