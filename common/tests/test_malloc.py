"""common.malloc: after keep_freed_memory() a 16 MiB block comes from the heap and stays there when freed."""
import json
import subprocess
import sys
import textwrap

from common import events

PROBE = textwrap.dedent("""
    import ctypes, json, sys
    from common import malloc
    class Info(ctypes.Structure):  # struct mallinfo2 (glibc >= 2.33): size_t fields
        _fields_ = [(n, ctypes.c_size_t) for n in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                     "keepcost")]
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = Info
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    choice = malloc.keep_freed_memory() if sys.argv[1] == "keep" else "default"
    size = 16 * 1024 * 1024
    block = libc.malloc(size)
    mapped = libc.mallinfo2().hblkhd        # bytes in mmapped blocks while the 16 MiB block lives
    libc.free(block)
    arena = libc.mallinfo2().arena          # heap bytes held after the free
    print(json.dumps({"choice": choice, "mapped": mapped, "arena": arena}))
""")


def probe(mode, **env):
    root = str(events.Path(events.__file__).resolve().parent.parent)
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": root, **env}, check=True).stdout
    return json.loads(out.splitlines()[-1])


def test_a_large_block_comes_from_the_heap_and_stays_there():
    before = probe("default")
    assert before["mapped"] >= 16 * 1024 * 1024  # glibc's default: mmapped, given back on free
    after = probe("keep")
    assert after["choice"] == "keep"
    assert after["mapped"] < 16 * 1024 * 1024 and after["arena"] >= 16 * 1024 * 1024


def test_the_users_own_settings_win():
    got = probe("keep", MALLOC_MMAP_THRESHOLD_="131072")
    assert got["choice"] == "user" and got["mapped"] >= 16 * 1024 * 1024
