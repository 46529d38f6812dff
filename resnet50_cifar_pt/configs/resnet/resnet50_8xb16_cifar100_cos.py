# bs32 scripts: cosine annealing to 0 per epoch instead of steps (the scripts also set optimizer.lr=0.2)
_base_ = './resnet50_8xb16_cifar100.py'
lr_config = dict(_delete_=True, policy='CosineAnnealing', min_lr=0)
