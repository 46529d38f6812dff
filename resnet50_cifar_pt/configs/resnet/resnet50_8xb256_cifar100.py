# bs256 variant of the Ascend copy: lr scaled linearly from 0.1 at 16, 20 warm-up epochs then cosine,
# Mixup + CutMix with label smoothing. The multi-label head is what the original uses with the soft
# (mixed) targets; its sigmoid scores rank the classes the same way for top-k accuracy.
_base_ = './resnet50_8xb16_cifar100.py'

batch_size = 256
model = dict(
    head=dict(
        type='MultiLabelLinearClsHead',
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')),
    train_cfg=dict(augments=[
        dict(type='BatchMixup', alpha=1.0, num_classes=100, prob=0.5),
        dict(type='BatchCutMix', alpha=1.0, num_classes=100, prob=0.5)
    ]))
optimizer = dict(lr=0.1 * batch_size / 16)
lr_config = dict(
    _delete_=True,
    policy='CosineAnnealing',
    min_lr=0,
    warmup='linear',
    warmup_ratio=1e-3,
    warmup_iters=20,
    warmup_by_epoch=True)
data = dict(samples_per_gpu=batch_size, workers_per_gpu=12, persistent_workers=True)
