"""ResNet-20 v1 in the Keras "ResNet v1 for CIFAR" style used by the keras-io CutMix example.

Every convolution keeps its bias and the two projection shortcuts are bare 1x1 convolutions (no BN),
which is why the trainable count is 273,066 and not the 272,474 of the PyTorch-style ResNet-20.

Layer names are the ones keras-io's ``resnet_v20`` gets in a fresh Keras session (``conv2d``, ``conv2d_1``, ...,
``batch_normalization``, ``activation``, ``add``, ``average_pooling2d``, ``flatten``, ``dense``: one counter per
layer kind, in creation order), given explicitly: Keras' automatic names count up per process, so a second
model built in the same process would otherwise be ``conv2d_21``... and its weights file would not match a
keras-io one by name.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
import tf_keras as keras  # noqa: E402  (the env var must be set before Keras is imported)

TRAINABLE_PARAMS = 273_066
TOTAL_PARAMS = 274_442


class _Names:
    """Keras' automatic layer names (``kind``, ``kind_1``, ``kind_2``, ...), counted within one model build."""

    def __init__(self):
        self.count = {}

    def __call__(self, kind):
        k = self.count.get(kind, 0)
        self.count[kind] = k + 1
        return kind if k == 0 else f"{kind}_{k}"


def resnet_layer(x, names, filters=16, kernel_size=3, strides=1, activation="relu", batch_norm=True):
    # created in keras-io's order (conv, BN, activation): the names count up in that order
    x = keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="same",
                            kernel_initializer="he_normal",
                            kernel_regularizer=keras.regularizers.l2(1e-4), name=names("conv2d"))(x)
    if batch_norm:
        x = keras.layers.BatchNormalization(name=names("batch_normalization"))(x)
    if activation is not None:
        x = keras.layers.Activation(activation, name=names("activation"))(x)
    return x


def resnet_v1(input_shape=(32, 32, 3), depth=20, num_classes=10):
    if (depth - 2) % 6:
        raise ValueError(f"ResNet v1 depth must be 6n+2, got {depth}")
    blocks = (depth - 2) // 6
    names = _Names()
    inputs = keras.Input(shape=input_shape, name="input_1")  # Keras numbers its first Input from 1
    x = resnet_layer(inputs, names)
    filters = 16
    for stack in range(3):
        for block in range(blocks):
            strides = 2 if stack > 0 and block == 0 else 1
            y = resnet_layer(x, names, filters, strides=strides)
            y = resnet_layer(y, names, filters, activation=None)
            if strides != 1:
                # projection shortcut: 1x1 strided conv, no BN, no activation (as upstream)
                x = resnet_layer(x, names, filters, kernel_size=1, strides=strides, activation=None,
                                 batch_norm=False)
            x = keras.layers.add([x, y], name=names("add"))
            x = keras.layers.Activation("relu", name=names("activation"))(x)
        filters *= 2
    x = keras.layers.AveragePooling2D(pool_size=8, name=names("average_pooling2d"))(x)
    x = keras.layers.Flatten(name=names("flatten"))(x)
    # float32 head so that a mixed-precision policy never produces float16 probabilities
    outputs = keras.layers.Dense(num_classes, activation="softmax", kernel_initializer="he_normal",
                                 dtype="float32", name=names("dense"))(x)
    # "model": the name keras-io's keras.models.Model(inputs, outputs) gets in a fresh session
    return keras.Model(inputs, outputs, name="model")


def count_params(model):
    trainable = sum(int(w.shape.num_elements()) for w in model.trainable_weights)
    return trainable, trainable + sum(int(w.shape.num_elements()) for w in model.non_trainable_weights)


def compile_model(model):
    """The original's compile: categorical cross-entropy on the softmax outputs, Adam with Keras defaults
    (lr 1e-3), accuracy. Returns the model."""
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model
