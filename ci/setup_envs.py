#!/usr/bin/env python3
"""Build the per-framework virtual environments (`make setup`).

One environment per framework, because the frameworks do not share one well (MindSpore needs
numpy<2, mmcv 1.7 needs setuptools<81 and --no-build-isolation after torch):

    .envs/tf         <- cspnet_tf1/requirements.txt + cutmix_tf2/requirements.txt
    .envs/torch      <- resnet50_cifar_pt/requirements.txt
    .envs/mindspore  <- sppnet_ms/requirements.txt + tinydarknet_ms/requirements.txt
    .envs/ci         <- ci/requirements.txt (dataset builder, common/ tests, plots)
    .envs/torch-npu  <- resnet50_cifar_pt/requirements.txt with requirements-npu.txt's pins on top
                        (optional, `make setup-npu`, for an Ascend host with CANN; never built by `make setup`)

Each environment is built once into a cache directory keyed by a hash of its requirement lines and
the Python version (``$MODELZOO_ENV_CACHE``, default ``$XDG_CACHE_HOME/modelzoo/envs``), and
``.envs/<name>`` is a symlink to it, the way tox and nox reuse environments. A second run with
unchanged requirements only checks the links and takes well under a second. ``common/`` is not
installed into the cached environment (it would then point at whichever clone built it): the
launcher ``common/sh/env.sh`` puts the clone's own root on ``PYTHONPATH``.

An environment counts as built only once every install step and an import check succeeded and the
marker file ``.modelzoo-complete`` was written last; a failed build is removed.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# environment -> (requirement files, modules that must import afterwards)
ENVS = {
    "ci": (["ci/requirements.txt"], ["numpy", "sklearn", "PIL", "matplotlib", "pytest"]),
    "tf": (["cspnet_tf1/requirements.txt", "cutmix_tf2/requirements.txt"],
           ["tensorflow", "tf_keras", "tf2onnx", "onnxruntime", "matplotlib", "pytest"]),
    "torch": (["resnet50_cifar_pt/requirements.txt"],
              ["torch", "torchvision", "mmcv", "mmcls", "onnxruntime", "onnxscript", "matplotlib", "pytest"]),
    "mindspore": (["sppnet_ms/requirements.txt", "tinydarknet_ms/requirements.txt"],
                  ["mindspore", "PIL", "onnxruntime", "matplotlib", "pytest"]),
    # torch_npu imports only where the CANN toolkit is installed (it loads its libraries at import)
    "torch-npu": (["resnet50_cifar_pt/requirements.txt"], ["torch", "torch_npu", "torchvision", "mmcv", "mmcls"]),
}
OPTIONAL = ("torch-npu",)  # built only when named: `make setup` builds the others
# environment -> a file whose lines replace the same projects' lines of the requirement files (added when new)
OVERLAYS = {"torch-npu": "resnet50_cifar_pt/requirements-npu.txt"}
NO_ISOLATION_MARK = "modelzoo: no-build-isolation"


class SetupError(RuntimeError):
    pass


def cache_root() -> Path:
    if os.environ.get("MODELZOO_ENV_CACHE"):
        return Path(os.environ["MODELZOO_ENV_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "modelzoo" / "envs"


def project(spec: str) -> str:
    """The normalised project name of a requirement line (``Torch_NPU>=1`` -> ``torch-npu``)."""
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]*", spec).group(0)).lower()


def _lines(rel: str):
    path = ROOT / rel
    if not path.is_file():
        raise SetupError(f"{rel}: requirements file missing")
    for raw in path.read_text().splitlines():
        spec = raw.split("#", 1)[0].strip()
        if spec:
            yield spec, NO_ISOLATION_MARK in raw


def read_requirements(name: str) -> tuple[list[str], list[str]]:
    """Return (normal, no_build_isolation) requirement specs, de-duplicated, in file order.

    The environment's overlay file (``OVERLAYS``), if any, replaces the lines of the projects it names in
    place and adds the others: ``requirements-npu.txt`` moves the torch pins without copying the whole list.
    """
    specs, seen = [], set()
    for rel in ENVS[name][0]:
        for spec, late in _lines(rel):
            if spec not in seen:
                seen.add(spec)
                specs.append((spec, late))
    if name in OVERLAYS:
        over = dict((project(spec), (spec, late)) for spec, late in _lines(OVERLAYS[name]))
        specs = [over.pop(project(spec), (spec, late)) for spec, late in specs] + list(over.values())
    return [s for s, late in specs if not late], [s for s, late in specs if late]


def resolve(name: str) -> dict:
    """Ask pip to resolve the environment's requirements without installing: {project: version}.

    The no-build-isolation lines (mmcv, an sdist built against the installed torch) are left out: their
    metadata comes from a build. Raises SetupError with pip's last lines when the pins conflict.
    """
    import json
    import tempfile
    normal, _ = read_requirements(name)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        extra = os.environ.get("MODELZOO_PIP_ARGS", "").split()
        cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--dry-run", "--quiet",
               "--ignore-installed", "--report", str(report), *extra, *normal]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join(line for line in proc.stderr.splitlines() if "WARNING" not in line)[-2000:]
            raise SetupError(f"environment '{name}': the requirements do not resolve together:\n{tail}")
        return {project(i["metadata"]["name"]): i["metadata"]["version"]
                for i in json.loads(report.read_text())["install"]}


def env_key(name: str) -> str:
    normal, late = read_requirements(name)
    text = "\n".join(normal + ["--no-build-isolation"] + late + [sys.version.split()[0], "v1"])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def guess_package(log: str, specs: list[str]) -> str:
    """Name the requirement pip failed on, from its output; fall back to the whole step."""
    patterns = [r"Could not find a version that satisfies the requirement ([^\s]+)",
                r"No matching distribution found for ([^\s]+)",
                r"Failed building wheel for ([^\s]+)",
                r"Failed to build ([^\s]+)",
                r"Building wheel for ([^\s]+) \(.*\) \.\.\. error",
                r"ResolutionImpossible.*?requested ([^\s]+)"]
    for pat in patterns:
        m = re.search(pat, log, re.S)
        if m:
            return m.group(1)
    return " ".join(specs)


def pip(python: Path, args: list[str], specs: list[str], name: str, log_path: Path) -> None:
    # MODELZOO_PIP_ARGS: extra pip flags for every step (e.g. a local --find-links, or --no-index in tests)
    extra = os.environ.get("MODELZOO_PIP_ARGS", "").split()
    cmd = [str(python), "-m", "pip", "install", "--disable-pip-version-check", *extra, *args, *specs]
    with open(log_path, "a") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    if rc != 0:
        text = log_path.read_text(errors="replace")
        pkg = guess_package(text, specs)
        tail = "\n".join(text.splitlines()[-15:])
        raise SetupError(f"environment '{name}': pip failed installing {pkg} (log: {log_path})\n{tail}")


def build(name: str, target: Path) -> None:
    normal, late = read_requirements(name)
    # Built in place; only the marker written last makes it count as complete, and the .envs link
    # is made only after that, so an interrupted or failed build is never mistaken for a good one.
    partial = target
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    log_path = partial.parent / f"{target.name}.log"
    log_path.write_text("")
    print(f"setup: building environment '{name}' (log: {log_path})", flush=True)
    t0 = time.time()
    try:
        subprocess.check_call([sys.executable, "-m", "venv", str(partial)])
        py = partial / "bin" / "python"
        pip(py, ["--upgrade"], ["pip"], name, log_path)
        if normal:
            pip(py, [], normal, name, log_path)
        if late:
            pip(py, ["--no-build-isolation"], late, name, log_path)
        mods = ENVS[name][1]
        check = subprocess.run([str(py), "-c", "import importlib,sys\nfor m in sys.argv[1:]: importlib.import_module(m)", *mods],
                               capture_output=True, text=True, env={**os.environ, "TF_USE_LEGACY_KERAS": "1"})
        if check.returncode != 0:
            last = (check.stderr.strip().splitlines() or ["?"])[-1]
            raise SetupError(f"environment '{name}': import check failed after install: {last}")
        (partial / ".modelzoo-complete").write_text(env_key(name) + "\n")
    except BaseException:
        # Never leave an environment that looks complete but is not.
        shutil.rmtree(partial, ignore_errors=True)
        raise
    print(f"setup: environment '{name}' built in {time.time() - t0:.0f} s", flush=True)


def ensure(name: str) -> None:
    target = cache_root() / f"{name}-{env_key(name)}"
    if not (target / ".modelzoo-complete").is_file():
        build(name, target)
    link = ROOT / ".envs" / name
    link.parent.mkdir(exist_ok=True)
    if link.is_symlink() and os.readlink(link) == str(target):
        return
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        shutil.rmtree(link)
    tmp = link.with_name(name + ".tmp-link")
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(target)
    tmp.rename(link)
    print(f"setup: .envs/{name} -> {target}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = [n for n in ENVS if n not in OPTIONAL]
    ap.add_argument("envs", nargs="*", default=default, help=f"which environments (default: {default}; "
                    f"optional: {list(OPTIONAL)})")
    ap.add_argument("--resolve-only", action="store_true",
                    help="resolve each environment's pins with pip (nothing installed) and print the versions")
    args = ap.parse_args()
    t0 = time.time()
    for name in args.envs:
        if name not in ENVS:
            print(f"setup: unknown environment '{name}' (known: {', '.join(ENVS)})", file=sys.stderr)
            return 2
        try:
            if args.resolve_only:
                print(f"setup: {name} resolves: " + ", ".join(f"{k}=={v}" for k, v in sorted(resolve(name).items())))
            else:
                ensure(name)
        except SetupError as exc:
            print(f"setup: ERROR: {exc}", file=sys.stderr)
            return 1
    print(f"setup: environments ready ({', '.join(args.envs)}) in {time.time() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
