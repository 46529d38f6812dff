# epoch_N.pth every epoch plus latest.pth, none deleted (mmcv's default max_keep_ckpts=-1)
checkpoint_config = dict(interval=1)
# the Ascend copy logs every iteration (upstream: 100); its scripts average the logged `time:` values
log_config = dict(
    interval=1,
    hooks=[
        dict(type='TextLoggerHook'),
    ])
# tools/train.py picks gloo on CPU, nccl on GPU and hccl on NPU; this is the GPU default
dist_params = dict(backend='nccl')
log_level = 'INFO'
load_from = None
resume_from = None
workflow = [('train', 1)]
