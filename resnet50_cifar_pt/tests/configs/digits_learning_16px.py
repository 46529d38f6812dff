# Learning check on the digits, sized for a 2-core CPU: the recipe's model, loss, SGD and pipeline
# order, but on 16 x 16 inputs (the digits are 8 x 8 upscaled, so nothing is lost; 3.5x fewer FLOPs
# than 32 x 32), batch 32, lr 0.1 after a short linear warm-up, and no horizontal flip (digits are
# not mirror-symmetric). Only the test uses this file.
_base_ = ['../../configs/resnet/resnet50_8xb16_cifar100.py']
img_norm_cfg = dict(mean=[129.304, 124.070, 112.434], std=[68.170, 65.392, 70.418], to_rgb=False)
train_pipeline = [
    dict(type='Resize', size=(16, 16)),
    dict(type='RandomCrop', size=16, padding=2),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='ImageToTensor', keys=['img']),
    dict(type='ToTensor', keys=['gt_label']),
    dict(type='Collect', keys=['img', 'gt_label'])
]
test_pipeline = [
    dict(type='Resize', size=(16, 16)),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='ImageToTensor', keys=['img']),
    dict(type='Collect', keys=['img'])
]
data = dict(samples_per_gpu=32, workers_per_gpu=0,
            train=dict(pipeline=train_pipeline), val=dict(pipeline=test_pipeline), test=dict(pipeline=test_pipeline))
optimizer = dict(lr=0.1)
lr_config = dict(policy='step', step=[100], warmup='linear', warmup_iters=20, warmup_ratio=0.1)
runner = dict(max_epochs=3)
