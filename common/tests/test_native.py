"""common.native: a C++ source is compiled once into the kernel cache, loaded from there, rebuilt when damaged,
and every failure is one line with nothing half-written left behind."""
import ctypes

import pytest

from common import native

SOURCE = 'extern "C" int twice(int x) { return 2 * x; }\n'


def _commands(cxx, src, *extra):
    return [[cxx, "-std=c++17", "-O2", "-fPIC", "-shared", *extra, str(src), "-o", "OUT"]]


def _load(path):
    return ctypes.CDLL(path).twice(21)


@pytest.fixture
def src(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELZOO_KERNEL_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "twice.cc"
    path.write_text(SOURCE)
    return path


def _cache_files(tmp_path):
    return sorted(p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock"))


def test_built_once_then_loaded_from_the_cache(src, tmp_path):
    cxx, _ = native.compiler()
    assert native.load_cached(src, "twice", _commands(cxx, src), _load) == 42
    [name] = _cache_files(tmp_path)
    assert name.startswith("twice-") and name.endswith(".so")
    inode = (tmp_path / "cache" / name).stat().st_ino
    assert native.load_cached(src, "twice", _commands(cxx, src), _load) == 42
    assert (tmp_path / "cache" / name).stat().st_ino == inode  # not built again
    # another source (or command) is another cache entry
    src.write_text(SOURCE.replace("2 * x", "2 * x + 0"))
    assert native.load_cached(src, "twice", _commands(cxx, src), _load) == 42
    assert len(_cache_files(tmp_path)) == 2


def test_a_damaged_cached_library_is_built_again(src, tmp_path):
    cxx, _ = native.compiler()
    path = native.library_path(src, "twice", _commands(cxx, src))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x7fELF" + bytes(60))  # a copy cut short by a full disk
    assert native.load_cached(src, "twice", _commands(cxx, src), _load) == 42
    assert path.read_bytes()[:4] == b"\x7fELF" and path.stat().st_size > 1000
    assert _cache_files(tmp_path) == [path.name]


def test_a_failing_first_command_falls_back_to_the_next_and_says_so(src, tmp_path, capsys):
    cxx, _ = native.compiler()
    commands = _commands(cxx, src, "-march=no-such-cpu") + _commands(cxx, src)
    assert native.load_cached(src, "twice", commands, _load, labels=["-march=no-such-cpu", "for the default"]) == 42
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("twice.cc: the -march=no-such-cpu build failed (") and line.endswith(
        "built for the default instead")


def test_a_source_that_does_not_compile_is_one_line_and_leaves_nothing(src, tmp_path):
    src.write_text("this is not C++\n")
    cxx, _ = native.compiler()
    with pytest.raises(native.Unavailable, match="building twice.cc failed") as info:
        native.load_cached(src, "twice", _commands(cxx, src), _load)
    assert "\n" not in str(info.value)
    assert _cache_files(tmp_path) == []  # nothing half-written


def test_no_compiler_is_one_line(src, tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    with pytest.raises(native.Unavailable, match=r"no C\+\+ compiler: .*no-such-compiler.* is not on PATH"):
        native.compiler()
