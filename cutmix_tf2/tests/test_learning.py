"""The recipe learns: CutMix ResNet-20 reaches >= 0.7 top-1 on the 300 held-out digits in 564 steps (7x chance).

Everything is the recipe's default (Adam 1e-3, CutMix Beta(0.25, 0.25), seed 42) except the batch: 8
instead of 32. On 1,497 images, batch 32 gives only 47 steps (and BN moving-average updates) per
epoch and had reached only 0.73 after 6 epochs.

Measured on a 2-core AMD EPYC (AVX2, no AVX-512; loaded by other suites), seeds 42, 0, 1, 2, 3, 4, 5:
after 3 epochs (564 steps) 0.897, 0.827, 0.870, 0.943, 0.903, 0.923, 0.957 (lowest 0.827, mean 0.90);
after 2 epochs (376 steps, this test's length before) 0.937, 0.837, 0.773, 0.690, 0.833, 0.947, 0.770. The test
accuracy of such short runs swings (BatchNorm's moving averages, momentum 0.99, lag behind the weights), so
the former threshold of 0.8 after 2 epochs failed for 3 of these 7 seeds: float32 results differ between CPU
kinds, so another host's seed 42 is any of these draws. 0.7 after 3 epochs lies 0.127 below the lowest
measured. Not measured on an Intel AVX-512 host (none here). Figures noted earlier after 2 epochs, host not
recorded: 0.897 (seed 42), 0.933, 0.880, 0.817 (seeds 0, 1, 2).

Run twice: float32 (the CPU default) and bf16 (the policy train.py sets for --precision_mode
allow_mix_precision on CPU, mixed_bfloat16), the latter only where the CPU has bf16 in hardware
(common.testing.bf16_case). On a 2-core Intel Xeon with AVX512_BF16 and AMX, seed 42: float32 0.863, bf16 0.823,
about 20 s each.
"""
import pytest
import tf_keras as keras

from common import testing
from src import device as dev
from src import pipeline
from src.data import load_arrays, one_hot
from src.model import resnet_v1

BATCH, EPOCHS = 8, 3


@pytest.fixture
def precision(request):
    """The Keras policy train.py sets for ``--precision_mode`` on CPU (None: the default, float32; the bf16 opt-in
    is allow_mix_precision), reset to float32 after the test: the policy is process-global."""
    policy = dev.apply_precision("cpu", dev.resolve_precision("cpu", request.param))
    yield policy
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("precision", [pytest.param(None, id="fp32"), testing.bf16_case("allow_mix_precision")],
                         indirect=True)
def test_cutmix_resnet20_reaches_70_percent_on_digits(digits, precision):
    x_train, y_train, x_test, y_test, _ = load_arrays(digits)
    keras.utils.set_random_seed(42)
    model = resnet_v1()
    computes = {layer.compute_dtype for layer in model.layers if isinstance(layer, keras.layers.Conv2D)}
    assert computes == {"float32" if precision == "float32" else "bfloat16"}, (precision, computes)
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    steps = pipeline.steps_per_epoch(len(x_train), BATCH)
    assert steps * EPOCHS == 564
    train = pipeline.train_dataset(x_train, one_hot(y_train), 0, EPOCHS, 42, BATCH)
    model.fit(train, epochs=EPOCHS, steps_per_epoch=steps, verbose=0)
    _, accuracy = model.evaluate(pipeline.test_dataset(x_test, one_hot(y_test), 32), verbose=0)
    print(f"top-1 {accuracy:.3f} after {steps * EPOCHS} steps in {precision}")
    assert accuracy >= 0.7, f"top-1 {accuracy:.3f} after {steps * EPOCHS} steps in {precision}"
