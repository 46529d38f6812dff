"""common.imagefolder.encoded_problem: the per-image check the MindSpore readers make before MindSpore's decoder,
which a broken JPEG header crashes (SIGSEGV, SIGFPE) instead of raising. Valid files of every kind the encoders
write must pass; each header rule must refuse the break it guards, in words naming the part."""
import io

import numpy as np
import pytest
from PIL import Image

from common import imagefolder
from common.imagefolder import encoded_problem
from common.testing import break_huffman_table, jpeg_segment, pillow_decodes


def _jpeg(mode="RGB", size=(40, 24), **kw) -> bytes:
    rng = np.random.default_rng(0)
    im = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype="uint8")).convert(mode)
    buf = io.BytesIO()
    im.save(buf, "JPEG", **kw)
    return buf.getvalue()


VALID = {"baseline": {}, "progressive": dict(progressive=True), "optimized": dict(optimize=True),
         "restart_markers": dict(restart_marker_blocks=1), "4:4:4": dict(subsampling=0, quality=100),
         "4:2:2": dict(subsampling=1), "low_quality": dict(quality=3),
         "icc_over_three_app2_segments": dict(icc_profile=bytes(range(256)) * 600),
         "exif": dict(exif=b"Exif\x00\x00" + bytes(3000)), "comment": dict(comment=b"c" * 5000)}


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_jpegs_of_every_kind_pass(mode, name):
    data = _jpeg(mode, **VALID[name])
    assert pillow_decodes(data) and encoded_problem(data) == ""


def test_motion_jpeg_without_huffman_tables_and_stray_bytes_pass_as_the_decoder_takes_them():
    data = _jpeg()  # not optimized: the standard tables, which a decoder supplies when a frame has none
    while True:
        try:
            at = jpeg_segment(data, 0xC4)
        except ValueError:
            break
        data = data[:at] + data[at + 2 + int.from_bytes(data[at + 2:at + 4], "big"):]
    assert pillow_decodes(data) and encoded_problem(data) == ""
    sof = jpeg_segment(data, 0xC0)
    stray = data[:sof] + b"\x00\x12\x34" + data[sof:]  # garbage between segments: skipped to the next marker
    assert pillow_decodes(stray) and encoded_problem(stray) == ""


def test_data_after_the_end_marker_passes_and_a_thumbnails_end_marker_does_not_hide_a_cut():
    data = _jpeg()
    motion_photo = data + bytes(5000)  # a phone's video after the picture
    assert pillow_decodes(motion_photo) and encoded_problem(motion_photo) == ""
    body = b"Exif\x00\x00" + b"\xff\xd8 thumbnail \xff\xd9"
    thumbnail = data[:2] + b"\xff\xe1" + (len(body) + 2).to_bytes(2, "big") + body + data[2:]
    assert encoded_problem(thumbnail) == ""
    assert encoded_problem(thumbnail[:-200]) == "cannot decode (cut short: no JPEG end marker)"


def _set(data: bytes, marker: int, offset: int, value: int) -> bytes:
    at = jpeg_segment(data, marker) + offset
    return data[:at] + bytes([value]) + data[at + 1:]


BROKEN = [  # (what, the change to a valid file, words of the problem)
    ("Huffman counts past the segment (crashes MindSpore)", lambda d: break_huffman_table(d), "Huffman table"),
    ("quantisation table id 7", lambda d: _set(d, 0xDB, 4, 0x07), "quantisation table"),
    ("frame component's quantisation table 10", lambda d: _set(d, 0xC0, 4 + 6 + 2, 10), "frame header"),
    ("frame of 0 rows", lambda d: _set(_set(d, 0xC0, 5, 0), 0xC0, 6, 0), "frame header"),
    ("scan of a component the frame lacks", lambda d: _set(d, 0xDA, 5, 9), "scan header"),
    ("scan whose DC table was never defined", lambda d: _set(d, 0xDA, 6, 0x30), "not defined"),
    ("DC symbol 200", lambda d: _set(d, 0xC4, 4 + 17, 200), "DC symbol"),
    ("segment length past the end", lambda d: d[:jpeg_segment(d, 0xC0) + 6], "runs past the end"),
    ("end marker cut off", lambda d: d[:-40], "cut short"),
]


@pytest.mark.parametrize("what, change, words", BROKEN, ids=[b[0] for b in BROKEN])
def test_each_header_rule_refuses_its_break(what, change, words):
    data = change(_jpeg())
    problem = encoded_problem(data)
    assert problem.startswith("cannot decode") and words in problem, problem


def test_progressive_scan_parameters_out_of_range_are_refused():
    data = _jpeg(progressive=True)
    at = jpeg_segment(data, 0xDA)
    n = data[at + 4]
    se = at + 4 + 1 + 2 * n + 1  # Ss, then Se: 255 in a DC scan
    assert encoded_problem(data[:se] + b"\xff" + data[se + 1:]).endswith("progressive parameters 0-255, 0/1)")


def test_zero_byte_and_non_image_files_and_a_png_cut_short():
    assert encoded_problem(b"") == "zero-byte file"
    assert "not a JPEG, PNG or BMP" in encoded_problem(b"GIF89a" + bytes(50))
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    assert encoded_problem(buf.getvalue()) == "" and "cut short" in encoded_problem(buf.getvalue()[:-20])


def test_vetting_refuses_what_the_reader_refuses_even_where_pillow_decodes_it(tmp_path):
    """A scan whose DC table is undefined while others are: Pillow decodes it, MindSpore's decoder does not; a
    vetted run must not pass a file its reader then stops on."""
    path = tmp_path / "x.JPEG"
    path.write_bytes(break_huffman_table(_jpeg()))
    assert imagefolder.check_image(path).startswith("cannot decode (corrupt JPEG header: Huffman table")


def test_the_line_of_a_reader_error_raised_inside_mindspores_pipeline():
    wrapped = RuntimeError("Exception thrown from user defined Python function in dataset.\n"
                           "ImageFolderError: Traceback (most recent call last):\n"
                           '  File "src/dataset.py", line 69, in __getitem__\n'
                           "common.imagefolder.ImageFolderError: /d/a.JPEG: cannot decode (corrupt JPEG header: x)\n"
                           "- Dataset Pipeline Error Message:\n")
    assert imagefolder.reader_error_line(wrapped) == "/d/a.JPEG: cannot decode (corrupt JPEG header: x)"
    assert imagefolder.reader_error_line(RuntimeError("out of memory")) is None
    assert imagefolder.reader_error_line(ValueError("ImageFolderError: x")) is None
