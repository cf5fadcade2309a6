"""Convolutional models (gbi_jax.models.conv): im2col convolution, pixel shuffle, the
conditional autoencoder and the classifier."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gbi_jax.models import Classifier, ConditionalAutoencoder, Conv3x3, Encoder, depth_to_space


@pytest.mark.parametrize("stride, size", [(1, 14), (2, 28), (2, 7)])
def test_conv3x3_is_a_same_convolution(stride, size):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, size, size, 3))
    conv = Conv3x3(5, stride)
    p = jax.jit(conv.init)(jax.random.PRNGKey(1), x)
    kernel = p["params"]["Dense_0"]["kernel"].reshape(3, 3, 3, 5)
    ref = jax.lax.conv_general_dilated(x, kernel, (stride, stride), "SAME",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(jax.jit(conv.apply)(p, x), ref + p["params"]["Dense_0"]["bias"],
                               atol=1e-5)


def test_depth_to_space_layout():
    x = np.arange(2 * 3 * 3 * 8, dtype=np.float32).reshape(2, 3, 3, 8)
    y = np.asarray(depth_to_space(jnp.asarray(x)))
    assert y.shape == (2, 6, 6, 2)
    # Closed form: out[b*h + i, b*w + j, c] = x[h, w, (i*b + j)*C + c].
    for i in range(2):
        for j in range(2):
            np.testing.assert_array_equal(y[:, i::2, j::2],
                                          x[..., (2 * i + j) * 2:(2 * i + j + 1) * 2])
    y3 = np.asarray(depth_to_space(jnp.asarray(np.arange(18.0).reshape(1, 1, 2, 9)), block=3))
    np.testing.assert_array_equal(y3[0, :, :3, 0], np.arange(9.0).reshape(3, 3))
    with pytest.raises(ValueError, match="block"):
        depth_to_space(jnp.zeros((1, 2, 2, 6)))


@pytest.mark.parametrize("shape, k", [((28, 28, 1), 10), ((32, 32, 3), 100)])
def test_autoencoder_and_classifier_shapes(shape, k):
    ae = ConditionalAutoencoder(image_shape=shape, features=(4, 8), z_injection="concat+film")
    x, z = jnp.zeros((3,) + shape), jnp.zeros((3, k))
    out = jax.eval_shape(lambda x: ae.apply(ae.init(jax.random.PRNGKey(0), x, z), x, z), x)
    assert out.shape == (3,) + shape
    clf = Classifier(num_classes=k, features=(4, 8), hidden=16)
    logits = jax.eval_shape(lambda x: clf.apply(clf.init(jax.random.PRNGKey(0), x), x), x)
    assert logits.shape == (3, k)
    feats = jax.eval_shape(lambda x: Encoder((4, 8)).init_with_output(
        jax.random.PRNGKey(0), x)[0], x)
    assert feats.shape == (3, shape[0] // 4 * shape[1] // 4 * 8)


def test_code_noise_only_with_a_key():
    ae = ConditionalAutoencoder(features=(4, 8), image_noise=0.5)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 28, 28, 1))
    z = jax.nn.one_hot(jnp.array([1, 2]), 10)
    p = ae.init(jax.random.PRNGKey(1), x, z)
    clean = ae.apply(p, x, z)
    np.testing.assert_array_equal(clean, ae.apply(p, x, z))
    assert not np.allclose(clean, ae.apply(p, x, z, jax.random.PRNGKey(2)))


@pytest.mark.parametrize("model, kw, field", [
    (ConditionalAutoencoder, dict(z_injection="both"), "z_injection"),
    (ConditionalAutoencoder, dict(image_shape=(30, 28, 1)), "image_shape"),
    (ConditionalAutoencoder, dict(image_shape=(28, 28)), "image_shape"),
    (ConditionalAutoencoder, dict(features=()), "features"),
    (ConditionalAutoencoder, dict(bottleneck=0), "bottleneck"),
    (ConditionalAutoencoder, dict(image_noise=-0.1), "image_noise"),
    (Classifier, dict(num_classes=0), "num_classes"),
    (Classifier, dict(num_classes=3, hidden=0), "hidden"),
    (Classifier, dict(num_classes=3, features=(8, 0)), "features"),
    (Conv3x3, dict(features=0), "features"),
    (Conv3x3, dict(features=2, stride=0), "stride"),
])
def test_fields_are_validated(model, kw, field):
    with pytest.raises(ValueError, match=field):
        model(**kw)
