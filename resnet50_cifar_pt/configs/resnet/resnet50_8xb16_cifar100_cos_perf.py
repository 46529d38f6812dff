_base_ = './resnet50_8xb16_cifar100_cos.py'
runner = dict(max_epochs=2)
