"""Tests for the 'textures' dataset (unode_jax/data/textures.py): shapes, determinism,
disjoint train and test regions, offline reading, and the premise that rotation is harmless
on its classes (and not on brick, the texture left out)."""
import numpy as np
import pytest

from unode_jax.data import registry as R, textures as T
from unode_jax.data.types import DatasetNotFoundError

TRAIN, TEST = 29 * 17, 29 * 9  # Patches a class: rows x columns of the stride-8 grid.


@pytest.fixture(scope='module')
def native():
    """The loader's own output: gray (N, 32, 32)."""
    return T.load_textures()


def test_shapes_dtypes_and_classes(native, no_network):
    ds = R.load_dataset('textures')  # through the registry: 3 channels at 32 px
    k = len(T.TEXTURES)
    assert ds.x_train.shape == (k * TRAIN, 32, 32, 3)
    assert ds.x_test.shape == (k * TEST, 32, 32, 3)
    for x in (ds.x_train, ds.x_test):
        assert x.dtype == np.uint8
        assert (x == x[..., :1]).all()  # gray: 3 equal channels
    assert np.array_equal(ds.x_train[..., 0], native.x_train)  # native size: no resize
    assert ds.y_train.dtype == np.int32 and ds.y_test.dtype == np.int32
    assert ds.num_classes == k == 4
    assert ds.class_names == ('grass', 'gravel', 'galaxies', 'moon')
    assert np.bincount(ds.y_train).tolist() == [TRAIN] * k
    assert np.bincount(ds.y_test).tolist() == [TEST] * k
    for c in range(k):  # every patch is textured, not a flat or saturated cut
        assert native.x_train[native.y_train == c].std(axis=(1, 2)).min() > 1
    assert no_network.connections == []  # read from the wheel's files, nothing fetched


def test_two_loads_are_equal(native):
    again = T.load_textures()
    for field in ('x_train', 'y_train', 'x_test', 'y_test'):
        assert np.array_equal(getattr(again, field), getattr(native, field))


def test_train_and_test_regions_are_disjoint(native):
    # The grid: the last training patch ends where the first test patch starts.
    image = np.arange(256 * 256).reshape(256, 256)  # every pixel named by its value
    train = T.cut(image, 0, T.TRAIN_COLUMNS)
    test = T.cut(image, T.TRAIN_COLUMNS, 256)
    assert len(train) == TRAIN and len(test) == TEST
    assert not set(np.unique(train)) & set(np.unique(test))
    assert np.unique(train).size + np.unique(test).size == 256 * 256  # the image, covered
    # And on the data: no test patch equals a training patch.
    seen = {p.tobytes() for p in native.x_train}
    assert not any(p.tobytes() in seen for p in native.x_test)


def test_patches_are_the_grid_of_the_downscaled_image(native):
    image = T.read_texture(T.skimage_data_dir() / T.TEXTURES['gravel'])
    assert image.shape == (256, 256) and image.dtype == np.uint8
    gravel_train = native.x_train[native.y_train == 1]
    gravel_test = native.x_test[native.y_test == 1]
    assert np.array_equal(gravel_train[0], image[:32, :32])
    assert np.array_equal(gravel_train[1], image[:32, 8:40])
    assert np.array_equal(gravel_train[17], image[8:40, :32])  # 17 patches a row
    assert np.array_equal(gravel_test[0], image[:32, T.TRAIN_COLUMNS:T.TRAIN_COLUMNS + 32])
    assert np.array_equal(gravel_test[-1], image[-32:, -32:])


def test_missing_image_names_itself_in_one_line(tmp_path, monkeypatch):
    (tmp_path / 'grass.png').write_bytes(b'')  # present; the other three are not
    monkeypatch.setattr(T, 'skimage_data_dir', lambda: tmp_path)
    with pytest.raises(DatasetNotFoundError,
                       match='gravel.png, hubble_deep_field.jpg, moon.png not in') as err:
        R.load_dataset('textures')
    assert '\n' not in str(err.value) and str(tmp_path) in str(err.value)


# ---------------------------------------------------- the premise: rotation is harmless

def _features(x):
    """Per patch: mean, contrast, and four statistics a 90-degree turn exchanges (mean
    absolute difference and lag-4 correlation, along rows and along columns)."""
    x = x.astype(np.float64)

    def corr(a, b):
        a = a - a.mean(axis=(1, 2), keepdims=True)
        b = b - b.mean(axis=(1, 2), keepdims=True)
        return (a * b).mean(axis=(1, 2)) / (a.std(axis=(1, 2)) * b.std(axis=(1, 2)) + 1e-9)

    return np.stack([x.mean(axis=(1, 2)), x.std(axis=(1, 2)),
                     np.abs(np.diff(x, axis=2)).mean(axis=(1, 2)),
                     np.abs(np.diff(x, axis=1)).mean(axis=(1, 2)),
                     corr(x[:, :, :-4], x[:, :, 4:]), corr(x[:, :-4], x[:, 4:])], axis=1)


def _turned_nearest(patches):
    """{class: the class whose mean standardized features are nearest its patches' turned
    by 90 degrees}, for patches {class: uint8 (N, 32, 32)}."""
    feats = {c: _features(x) for c, x in patches.items()}
    pooled = np.concatenate(list(feats.values()))
    mu, sd = pooled.mean(axis=0), pooled.std(axis=0)
    centre = {c: ((f - mu) / sd).mean(axis=0) for c, f in feats.items()}
    nearest = {}
    for c, x in patches.items():
        turned = ((_features(np.rot90(x, 1, axes=(1, 2))) - mu) / sd).mean(axis=0)
        nearest[c] = min(centre, key=lambda d: np.linalg.norm(turned - centre[d]))
    return nearest


def test_rotation_is_harmless_on_every_class(native):
    """A class's patches turned by 90 degrees keep its statistics: nearer its own patches'
    than any other class's."""
    patches = {c: native.x_train[native.y_train == i] for i, c in enumerate(native.class_names)}
    assert _turned_nearest(patches) == {c: c for c in native.class_names}


def test_the_rotation_check_bites_on_brick(native):
    """Brick, left out: its courses run one way, and turned it is nearer another class."""
    patches = {c: native.x_train[native.y_train == i] for i, c in enumerate(native.class_names)}
    brick = T.read_texture(T.skimage_data_dir() / 'brick.png')
    patches['brick'] = T.cut(brick, 0, T.TRAIN_COLUMNS)
    assert _turned_nearest(patches)['brick'] != 'brick'
