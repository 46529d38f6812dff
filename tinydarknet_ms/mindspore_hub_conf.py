"""MindSpore Hub entry: ``create_network('tinydarknet', num_classes=1000)``."""
from src.tinydarknet import TinyDarkNet


def create_network(name, *args, **kwargs):
    if name != "tinydarknet":
        raise NotImplementedError(f"{name} is not implemented in this repo (only 'tinydarknet')")
    return TinyDarkNet(*args, **kwargs)
