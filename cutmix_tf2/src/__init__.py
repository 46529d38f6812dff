"""ResNet-20 v1 + CutMix on CIFAR-10 (tf-keras): model, data pipeline, device setup, callbacks."""
