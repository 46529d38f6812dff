"""Tiny-DarkNet recipe for MindSpore (mirrors mindspore-ai/models research/cv/tinydarknet)."""
