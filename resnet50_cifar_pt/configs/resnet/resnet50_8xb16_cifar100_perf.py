# performance run: the full recipe for 2 epochs
_base_ = './resnet50_8xb16_cifar100.py'
runner = dict(max_epochs=2)
