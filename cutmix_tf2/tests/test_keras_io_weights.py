"""Weights saved by the keras-io CutMix example load into this recipe (issue #20 item 1).

keras-io builds its ResNet-20 with the functional API and Keras' automatic layer names. The network here is
written in this file, layer by layer from keras-io's ``resnet_layer`` / ``resnet_v20`` sequence (Conv2D created
before its BatchNormalization and Activation; per block: unit, unit without activation, the 1x1 projection
when the block downsamples, add, ReLU; then AveragePooling2D(8), Flatten, Dense softmax), without
src.model, and saved the way a keras-io user would (``save_weights("x.h5")``, ``save("x.h5")``). eval.py must
then give the outputs of that network on the real digits test images.

Tolerance OUT_ATOL on the softmax probabilities: the same weights, inputs and batches (32) through the same
kernels in one process; measured difference 0 (bit-identical) for all three files. Every weight is drawn at
random (BatchNorm's moving statistics, gamma and beta included), so two layers of the same shape loaded into each
other's place change the outputs (checked below: SWAP_MIN).
"""
import json

import numpy as np
import pytest
import tf_keras as keras

from common import cli
from src.data import load_arrays

OUT_ATOL = 1e-6
SWAP_MIN = 1e-2  # two same-shape layers exchanged: the outputs must move by more than this


def _keras_io_resnet20():
    """keras-io's ResNet-20 v1 (depth 20, 10 classes), automatic names: independent of src.model."""
    layers = keras.layers

    def unit(x, filters, kernel=3, strides=1, relu=True, bn=True):
        conv = layers.Conv2D(filters, kernel_size=kernel, strides=strides, padding="same",
                             kernel_initializer="he_normal", kernel_regularizer=keras.regularizers.l2(1e-4))
        x = conv(x)
        if bn:
            x = layers.BatchNormalization()(x)
        return layers.Activation("relu")(x) if relu else x

    inputs = layers.Input(shape=(32, 32, 3))
    x = unit(inputs, 16)
    for stack, filters in enumerate((16, 32, 64)):
        for block in range(3):
            down = stack > 0 and block == 0
            y = unit(x, filters, strides=2 if down else 1)
            y = unit(y, filters, relu=False)
            if down:
                x = unit(x, filters, kernel=1, strides=2, relu=False, bn=False)
            x = layers.add([x, y])
            x = layers.Activation("relu")(x)
    x = layers.AveragePooling2D(pool_size=8)(x)
    x = layers.Flatten()(x)
    out = layers.Dense(10, activation="softmax", kernel_initializer="he_normal")(x)
    return keras.models.Model(inputs=inputs, outputs=out)


def _randomise(model, seed):
    """Every weight drawn afresh (kernels He-scaled, the rest around Keras' initial values), so that no two layers
    of one shape hold the same values: an exchange of two layers shows in the outputs."""
    rng = np.random.default_rng(seed)
    values = []
    for w in model.weights:
        shape, name = tuple(w.shape), w.name
        if "kernel" in name and len(shape) == 2:
            # the softmax head: small, so that the probabilities stay off 0 and 1 (a saturated softmax would
            # hide differences; at He scale the logits' std was 30 on the digits, here about 1.2)
            v = rng.standard_normal(shape) * 0.01
        elif "kernel" in name:
            v = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[:-1]))
        elif "gamma" in name or "moving_variance" in name:
            v = rng.uniform(0.5, 1.5, shape)
        else:  # bias, beta, moving_mean
            v = rng.normal(0.0, 0.1, shape)
        values.append(v.astype(np.float32))
    model.set_weights(values)
    return model


@pytest.fixture(scope="module")
def keras_io_model():
    keras.backend.clear_session()  # a fresh Keras session: the names a keras-io run's first model gets
    return _randomise(_keras_io_resnet20(), 0)


@pytest.fixture(scope="module")
def test_images(digits):
    x_test = load_arrays(digits)[2]
    return x_test.astype(np.float32) / 255.0  # the recipe's (and keras-io's) preprocessing: [0, 1]


def _eval(digits, checkpoint, tmp_path):
    """eval.py on the digits test set: (its JSON record, its predictions)."""
    import eval as evaluate
    result, preds = tmp_path / "eval.json", tmp_path / "preds.npy"
    assert evaluate.main([f"--data_dir={digits}", f"--checkpoint={checkpoint}", "--device=cpu",
                          f"--json={result}", f"--predictions={preds}"]) == 0
    return json.loads(result.read_text()), np.load(preds)


def test_our_layer_names_and_weights_are_keras_ios_whatever_was_built_before(keras_io_model):
    from src.model import resnet_v1
    ref = keras_io_model
    # facts of keras-io's sequence, independent of the reference builder above: 21 convs, the projections are
    # the 10th and 17th created, 19 BN, 9 adds
    assert sorted(l.name for l in ref.layers if isinstance(l, keras.layers.Conv2D)) == \
        sorted(["conv2d"] + [f"conv2d_{k}" for k in range(1, 21)])
    assert sum(isinstance(l, keras.layers.BatchNormalization) for l in ref.layers) == 19
    assert sum(isinstance(l, keras.layers.Add) for l in ref.layers) == 9
    assert [l.name for l in ref.layers if isinstance(l, keras.layers.Conv2D) and l.kernel_size == (1, 1)] == \
        ["conv2d_9", "conv2d_16"]
    assert ref.layers[-1].name == "dense" and ref.layers[1].name == "conv2d"
    expected = [(l.name, type(l).__name__) for l in ref.layers]
    expected_weights = [(w.name, tuple(w.shape)) for w in ref.weights]
    for _ in range(2):  # a second build in the same process keeps the names (Keras' own would count on)
        ours = resnet_v1()
        assert [(l.name, type(l).__name__) for l in ours.layers] == expected
        assert [(w.name, tuple(w.shape)) for w in ours.weights] == expected_weights
        assert ours.name == ref.name == "model"


def test_keras_io_save_weights_file_gives_the_same_outputs_through_eval(keras_io_model, digits, test_images,
                                                                         tmp_path):
    path = tmp_path / "keras_io_weights.h5"
    keras_io_model.save_weights(str(path))
    want = keras_io_model.predict(test_images, batch_size=32, verbose=0)
    record, got = _eval(digits, path, tmp_path)
    assert record["weights_loaded_by"] == "name" and record["images"] == len(test_images)
    assert got.shape == want.shape == (len(test_images), 10)
    diff = float(np.max(np.abs(got - want)))
    print(f"keras-io save_weights -> eval.py: max |diff| {diff:.3g}")
    assert diff <= OUT_ATOL
    assert np.array_equal(got.argmax(1), want.argmax(1))
    # the comparison can tell a misplaced layer: two 16-filter 3x3 convs exchanged move the outputs far more
    swapped = keras.models.clone_model(keras_io_model)
    swapped.set_weights(keras_io_model.get_weights())
    a, b = swapped.get_layer("conv2d_3"), swapped.get_layer("conv2d_4")
    wa, wb = a.get_weights(), b.get_weights()
    a.set_weights(wb)
    b.set_weights(wa)
    moved = float(np.max(np.abs(swapped.predict(test_images, batch_size=32, verbose=0) - want)))
    print(f"two 3x3 16-filter convs exchanged: max |diff| {moved:.3g}")
    assert moved > SWAP_MIN


def test_a_weights_file_listing_its_layers_in_another_order_still_loads_by_name(keras_io_model, test_images,
                                                                                tmp_path):
    """Names decide, not positions, when the names match: the file's layer list with conv2d_3 and conv2d_4
    exchanged (same shape) must give the same outputs (loading by order would put each in the other's place)."""
    import h5py
    from src import checkpointing
    path = tmp_path / "reordered.h5"
    keras_io_model.save_weights(str(path))
    with h5py.File(path, "r+") as f:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in f.attrs["layer_names"]]
        i, j = names.index("conv2d_3"), names.index("conv2d_4")
        names[i], names[j] = names[j], names[i]
        f.attrs["layer_names"] = np.array([n.encode() for n in names])  # as Keras writes it: fixed-size bytes
    info = {}
    model, _ = checkpointing.load_model(path, info)
    assert info["weights_loaded_by"] == "name"
    want = keras_io_model.predict(test_images, batch_size=32, verbose=0)
    assert float(np.max(np.abs(model.predict(test_images, batch_size=32, verbose=0) - want))) <= OUT_ATOL


def test_keras_io_full_model_file_gives_the_same_outputs_through_eval(keras_io_model, digits, test_images,
                                                                      tmp_path):
    path = tmp_path / "keras_io_model.h5"
    model = keras.models.clone_model(keras_io_model)  # compiled as keras-io compiles it: the file has Adam too
    model.set_weights(keras_io_model.get_weights())
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    model.save(str(path), save_format="h5")
    want = keras_io_model.predict(test_images, batch_size=32, verbose=0)
    record, got = _eval(digits, path, tmp_path)
    assert record["weights_loaded_by"] is None  # a whole model: its own architecture from the file
    assert float(np.max(np.abs(got - want))) <= OUT_ATOL


def test_keras_io_trained_model_file_numbered_after_its_initial_model_loads_by_order(keras_io_model, digits,
                                                                                     test_images, tmp_path):
    """keras-io builds initial_model first, then the model it trains: in that process the second one's layers
    are conv2d_21, ... (Keras counts names per process). Its save_weights file loads by layer order, as
    keras-io's own load_weights does."""
    trained = _randomise(_keras_io_resnet20(), 1)  # built after keras_io_model, no session cleared
    assert trained.layers[1].name != "conv2d"
    path = tmp_path / "keras_io_trained.h5"
    trained.save_weights(str(path))
    want = trained.predict(test_images, batch_size=32, verbose=0)
    record, got = _eval(digits, path, tmp_path)
    assert record["weights_loaded_by"] == "order"
    assert float(np.max(np.abs(got - want))) <= OUT_ATOL


def test_a_weights_file_of_another_network_is_refused_with_one_line(digits, tmp_path, capsys):
    import eval as evaluate
    other = keras.Sequential([keras.layers.Input(shape=(32, 32, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(10)])
    path = tmp_path / "other.h5"
    other.save_weights(str(path))
    rc = cli.guard(evaluate.main, [f"--data_dir={digits}", f"--checkpoint={path}", "--device=cpu"],
                   errors=evaluate.ERRORS)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "not this recipe's ResNet-20 weights" in err[0]
