"""The recipe learns: CutMix ResNet-20 reaches >= 0.8 top-1 on the 300 held-out digits in 376 steps.

Everything is the recipe's default (Adam 1e-3, CutMix Beta(0.25, 0.25), seed 42) except the batch: 8
instead of 32. On 1,497 images, batch 32 gives only 47 steps (and BN moving-average updates) per
epoch and had reached only 0.73 after 6 epochs; batch 8 gets there in 2 (measured after epoch 2: 0.897;
with seeds 0, 1, 2 instead of 42: 0.933, 0.880, 0.817).
"""
import tf_keras as keras

from src import pipeline
from src.data import load_arrays, one_hot
from src.model import resnet_v1

BATCH, EPOCHS = 8, 2


def test_cutmix_resnet20_reaches_80_percent_on_digits(digits):
    x_train, y_train, x_test, y_test, _ = load_arrays(digits)
    keras.utils.set_random_seed(42)
    model = resnet_v1()
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    steps = pipeline.steps_per_epoch(len(x_train), BATCH)
    assert steps * EPOCHS == 376
    train = pipeline.train_dataset(x_train, one_hot(y_train), 0, EPOCHS, 42, BATCH)
    model.fit(train, epochs=EPOCHS, steps_per_epoch=steps, verbose=0)
    _, accuracy = model.evaluate(pipeline.test_dataset(x_test, one_hot(y_test), 32), verbose=0)
    assert accuracy >= 0.8, f"top-1 {accuracy:.3f} after {steps * EPOCHS} steps"
