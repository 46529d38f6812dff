# CIFAR-100 python pickles. mmcls' own 'CIFAR100' type insists on the official MD5 sums and downloads
# otherwise; 'CIFAR100Local' (mmcls_ext/datasets.py) reads the same files through common's restricted
# unpickler and also accepts locally built data of the same format.
dataset_type = 'CIFAR100Local'
# the pickled images are already RGB, hence to_rgb=False
img_norm_cfg = dict(
    mean=[129.304, 124.070, 112.434],
    std=[68.170, 65.392, 70.418],
    to_rgb=False)
train_pipeline = [
    dict(type='RandomCrop', size=32, padding=4),
    dict(type='RandomFlip', flip_prob=0.5, direction='horizontal'),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='ImageToTensor', keys=['img']),
    dict(type='ToTensor', keys=['gt_label']),
    dict(type='Collect', keys=['img', 'gt_label'])
]
test_pipeline = [
    dict(type='Normalize', **img_norm_cfg),
    dict(type='ImageToTensor', keys=['img']),
    dict(type='Collect', keys=['img'])
]
data = dict(
    # The Ascend copy raised this from upstream's 16 to 512; its test scripts set
    # data.samples_per_gpu back to 16 (32 / 256 for the bs32 / bs256 scripts).
    samples_per_gpu=512,
    workers_per_gpu=2,
    train=dict(
        type=dataset_type,
        data_prefix='data/cifar100',
        pipeline=train_pipeline),
    val=dict(
        type=dataset_type,
        data_prefix='data/cifar100',
        pipeline=test_pipeline,
        test_mode=True),
    test=dict(
        type=dataset_type,
        data_prefix='data/cifar100',
        pipeline=test_pipeline,
        test_mode=True))
# every epoch, top-1 and top-5 (mmcls' default topk for 'accuracy')
evaluation = dict(interval=1, metric='accuracy')
