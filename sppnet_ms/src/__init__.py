"""ZFNet / SPPNet recipe (mirrors mindspore-ai/models research/cv/SPPNet)."""
