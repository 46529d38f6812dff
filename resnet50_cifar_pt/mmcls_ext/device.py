"""Device choice: the Ascend stack when it imports, else CUDA, else CPU. Nothing requires torch_npu."""
from __future__ import annotations

import importlib.util

import torch


class DeviceError(ValueError):
    pass


def npu_available() -> bool:
    if importlib.util.find_spec("torch_npu") is None:
        return False
    import torch_npu  # noqa: F401  (adds torch.npu)
    return bool(torch.npu.is_available())


def resolve_device(requested: str = "auto") -> str:
    """``auto|cpu|cuda|gpu|npu`` -> ``cpu|cuda|npu`` (``gpu`` is the Ascend scripts' name for cuda)."""
    requested = {"gpu": "cuda"}.get(requested, requested)
    if requested == "auto":
        if npu_available():
            return "npu"
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda: no CUDA device is visible to torch")
    if requested == "npu" and not npu_available():
        raise DeviceError("--device npu: torch_npu is not installed or no NPU is visible")
    if requested not in ("cpu", "cuda", "npu"):
        raise DeviceError(f"--device must be auto, cpu, cuda (gpu) or npu, got {requested!r}")
    return requested


def set_local_device(device: str, index: int) -> None:
    if device == "cuda":
        torch.cuda.set_device(index)
    elif device == "npu":
        torch.npu.set_device(index)


def dist_backend(device: str) -> str:
    return {"cpu": "gloo", "cuda": "nccl", "npu": "hccl"}[device]
