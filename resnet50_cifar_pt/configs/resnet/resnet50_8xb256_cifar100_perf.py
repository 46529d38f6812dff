_base_ = './resnet50_8xb256_cifar100.py'
runner = dict(max_epochs=2)
