"""Every test the documentation cites exists and is one pytest collects.

RELIABILITY.md and the READMEs back their claims with test names; a renamed or deleted test must not leave a
claim pointing at nothing. Collection is read from the source with pytest's rules (``test*`` functions at
module level or in ``Test*`` classes without ``__init__``, in ``test_*.py`` files under a ``tests`` folder), so
no framework environment is needed and all five recipes are checked in about a second.
"""
import ast
import functools
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ["README.md", "RELIABILITY.md", "BENCHMARKS.md",
        *sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("*/README.md")),
        *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
SPAN = re.compile(r"`([^`\n]+)`")
# a cited test: optional path::, optional Class::, the test's name, optional [parameter id]
CITED = re.compile(r"^(?:(?P<path>[\w./-]+\.py)::)?(?:(?P<cls>Test\w+)::)?(?P<name>test\w*)(?:\[[^\]]*\])?$")
FILE = re.compile(r"^(?:[\w./-]+/)?tests/test_\w+\.py$")
# a test name with a wildcard (`test_*_resume`), or an ellipsis standing for the part of test names
# (`..._any_process_starts`): cites no one test. `..._perf` (a config name no test name ends in) is not one
PATTERN = re.compile(r"[\w./:]*(?:\.\.\.|\*)[\w./:]*")


GENERATED = {"__pycache__", "data", "bench_output", "demo_output", "outputs", "output", "work_dirs"}  # no tests


def suite_files(root):
    """Every ``tests/test_*.py`` under ``root``, not looking into hidden trees (.envs, .git)."""
    for dirpath, dirnames, files in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in GENERATED)
        if Path(dirpath).name == "tests":
            yield from (Path(dirpath, f) for f in sorted(files) if f.startswith("test_") and f.endswith(".py"))


@functools.lru_cache(maxsize=None)
def collected(root):
    """{test name: {(file relative to root, class or '')}} of everything pytest would collect."""
    found = {}
    for f in suite_files(root):
        rel = str(f.relative_to(root))
        for node in ast.parse(f.read_text(), str(f)).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
                found.setdefault(node.name, set()).add((rel, ""))
            elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                methods = [n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
                if not any(m.name == "__init__" for m in methods):
                    for m in methods:
                        if m.name.startswith("test"):
                            found.setdefault(m.name, set()).add((rel, node.name))
    return found


def unresolved(text, index, root):
    """One line per backtick span of ``text`` that cites a test or test file which is not there."""
    bad = []
    for number, line in enumerate(text.splitlines(), 1):
        for span in (s.strip() for s in SPAN.findall(line)):
            m = CITED.match(span)
            if PATTERN.fullmatch(span) and ("test_" in span or any(
                    n.endswith(span.strip(".")) or n.startswith(span.strip(".")) for n in index if "..." in span)):
                bad.append(f"line {number}: `{span}` is a pattern, not a test name")
            elif FILE.match(span):
                if not any(str(f.relative_to(root)).endswith(span) for f in suite_files(root)):
                    bad.append(f"line {number}: `{span}` is no test file")
            elif m and (m["path"] or m["cls"] or m["name"].count("_") >= 2):  # not CIFAR's `test_batch`
                where = {w for w in index.get(m["name"], set())
                         if (not m["path"] or w[0] == m["path"] or w[0].endswith("/" + m["path"]))
                         and (not m["cls"] or w[1] == m["cls"])}
                if not where:
                    bad.append(f"line {number}: `{span}` is not a collected test")
    return bad


@pytest.mark.parametrize("doc", [d for d in DOCS if (ROOT / d).is_file()])
def test_every_cited_test_exists(doc):
    bad = unresolved((ROOT / doc).read_text(), collected(ROOT), ROOT)
    assert not bad, doc + ":\n" + "\n".join(bad)


def test_the_check_finds_each_kind_of_dangling_citation(tmp_path):
    tests = tmp_path / "recipe" / "tests"
    tests.mkdir(parents=True)
    (tests / "test_a.py").write_text("def test_real():\n    pass\n\nclass TestBox:\n    def test_inner(self):\n"
                                     "        pass\n\nclass TestInit:\n    def __init__(self):\n        pass\n"
                                     "    def test_never_collected(self):\n        pass\n\ndef helper_test_x():\n"
                                     "    pass\n")
    index = collected(tmp_path)
    good = ("`test_batch` (a CIFAR file), `..._perf`, `ckpt_*.pth`, `--data_path=...`, `test_real`, `recipe/tests/test_a.py::test_real`, `tests/test_a.py::TestBox::test_inner`, "
            "`TestBox::test_inner`, `test_real[param-1]`, `recipe/tests/test_a.py`")
    assert unresolved(good, index, tmp_path) == []
    bad = ("`test_gone_away`, `tests/test_b.py::test_real`, `TestOther::test_inner`, `test_never_collected`, "
           "`..._inner`, `tests/test_missing.py`")
    found = unresolved(bad, index, tmp_path)
    assert len(found) == 6, found
