"""Hyper-parameters of the three models, with the original ``src/config.py`` key names and values.

The original README's tables disagree with its config (lr 0.0035/0.001, 150 epochs); the config is what
the original code ran, so it is what is kept here (originals.md section 4.5).
"""
from types import SimpleNamespace

_COMMON = {
    'num_classes': 1000,
    'momentum': 0.9,
    'image_height': 224,
    'image_width': 224,
    'iteration_max': 150,       # cosine period in epochs (T); 160-epoch runs rise slightly again after 150
    'lr_min': 0.0,
    'weight_decay': 0.0001,     # not applied to biases (names ending .bias/.gamma/.beta)
    'loss_scale': 1024,
    'is_dynamic_loss_scale': 0,
    'seed': 44,
}

zfnet_cfg = dict(_COMMON, epoch_size=150, batch_size=256, warmup_epochs=5, lr_init=0.035, keep_prob=0.65)
sppnet_single_cfg = dict(_COMMON, epoch_size=160, batch_size=256, warmup_epochs=0, lr_init=0.01, keep_prob=0.59)
# the README's table says warmup 0; the original config file says 2, which is what it ran
sppnet_mult_cfg = dict(_COMMON, epoch_size=160, batch_size=128, warmup_epochs=2, lr_init=0.01, keep_prob=0.58)

MODELS = ('zfnet', 'sppnet_single', 'sppnet_mult')
_CFGS = {'zfnet': zfnet_cfg, 'sppnet_single': sppnet_single_cfg, 'sppnet_mult': sppnet_mult_cfg}

# multi-size training alternates epochs at these two sizes (224 first); other --image_size values keep the ratio
MULT_SIZES = (224, 180)


def get_config(train_model):
    """A fresh, mutable copy of one model's configuration."""
    if train_model not in _CFGS:
        raise ValueError(f"unknown model '{train_model}', expected one of {', '.join(MODELS)}")
    return SimpleNamespace(**_CFGS[train_model])


def resolve_config(args):
    """The model's configuration with the command line's overrides, checked (a bad value raises ValueError)."""
    from .dataset import second_size
    from .sppnet import min_image_size
    cfg = get_config(args.train_model)
    for key in ('epoch_size', 'batch_size', 'lr_init', 'warmup_epochs', 'keep_prob', 'seed'):
        if getattr(args, key) is not None:
            setattr(cfg, key, getattr(args, key))
    if cfg.warmup_epochs < 0 or cfg.lr_init <= 0:
        raise ValueError("--warmup_epochs must be >= 0 and --lr_init > 0")
    if not 0.0 < cfg.keep_prob <= 1.0:
        raise ValueError(f"--keep_prob must be in (0, 1], got {cfg.keep_prob}")
    minimum = min_image_size(args.train_model)
    if args.image_size < minimum:
        raise ValueError(f"--image_size {args.image_size} is too small for {args.train_model} (minimum {minimum})")
    if args.train_model == 'sppnet_mult' and second_size(args.image_size) < minimum:
        raise ValueError(f"--image_size {args.image_size}: its small size {second_size(args.image_size)} is below "
                         f"the minimum")
    return cfg
