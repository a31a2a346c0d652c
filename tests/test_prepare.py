"""prepare_batch, the Python API's input (Detector and the exported model): uint8 as before,
floats in [0, 1] as their uint8 x = round(255 f), anything else one ValueError sentence."""
import numpy as np
import pytest

from unode_jax.data import images as images_lib
from unode_jax.data import prepare as prepare_lib
from unode_jax.data.prepare import prepare_batch

SHAPES = [(5, 8, 8), (4, 20, 13, 3), (3, 7, 30, 1), (2, 16, 16, 3)]
GEOMETRY = [(16, None), (16, 20), (8, None), (12, 17)]


@pytest.mark.parametrize('shape', SHAPES)
def test_float_images_in_0_1_prepare_as_their_uint8(shape):
    x = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    x[0].flat[:2] = 0, 255  # both ends
    for size, resize in GEOMETRY:
        want = prepare_batch(x, size, resize)
        assert want.dtype == np.uint8 and want.shape == (shape[0], size, size, 3)
        for dtype in (np.float64, np.float32, np.float16):
            got = prepare_batch((x / 255.0).astype(dtype), size, resize)
            np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(prepare_lib.as_uint8(np.array([0.5 / 255, 0.4, 1.0])),
                                  [0, 102, 255])  # np.round: half to even


@pytest.mark.parametrize('x, message', [
    (np.zeros((2, 4, 4), np.int32), r'^images must be uint8 \(0 to 255\) or floats in \[0, 1\], '
                                    r'got int32$'),
    (np.zeros((2, 4, 4), bool), 'got bool$'),
    (np.full((2, 4, 4), np.nan), r'^images hold NaN'),
    (np.array([[[0.0, np.nan]]], np.float32), r'^images hold NaN'),
    (np.full((2, 4, 4), 1.5), r'^float images must lie in \[0, 1\], got values from 1.5 to 1.5'),
    (np.full((1, 4, 4), -0.25), r'from -0.25 to -0.25'),
    (np.array([[[0.0, np.inf]]]), r'from 0 to inf'),
    (np.zeros((0, 4, 4), np.uint8), r'^no images given$'),
    (np.zeros((2, 0, 4), np.float32), r'^images have no pixels: shape \(2, 0, 4\)$'),
    (np.zeros((2, 4, 4, 2), np.uint8), r'with C = 1 or 3, got uint8 \(2, 4, 4, 2\)$'),
    (np.zeros((4, 4), np.uint8), r'\(N, H, W\) or \(N, H, W, C\)'),
])
def test_bad_images_are_one_sentence(x, message):
    with pytest.raises(ValueError, match=message) as e:
        prepare_batch(x, 8)
    assert '\n' not in str(e.value)


def test_the_names_other_modules_import_stay_where_they_were():
    for name in ('prepare', 'prepare_batch', 'resized_shape', 'centre_crop_offsets'):
        assert getattr(images_lib, name) is getattr(prepare_lib, name)
