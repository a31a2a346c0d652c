"""Tests for unode_jax.data.corrupted: CIFAR-10-C and MNIST-C read from TFDS."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tests.tfds_mock import fake_prepared
from unode_jax.data import corrupted as C, datasets as D
from unode_jax.data.prepare import to_rgb


def test_names_match_installed_tfds():
    configs = tfds.builder_cls('cifar10_corrupted').BUILDER_CONFIGS
    names = tuple(dict.fromkeys(c.corruption for c in configs))
    assert C.TFDS_CORRUPTIONS['cifar10'] == names and len(names) == 19
    # Every corruption at every severity, named as the loader builds it.
    assert sorted(c.name for c in configs) == sorted(
        f'{n}_{s}' for n in names for s in C.TFDS_SEVERITIES['cifar10'])
    configs = tfds.builder_cls('mnist_corrupted').BUILDER_CONFIGS
    assert C.TFDS_CORRUPTIONS['mnist'] == tuple(c.name for c in configs)
    assert len(configs) == 16 and C.tfds_corruptions('mnist')[0] == 'identity'


@pytest.mark.parametrize('dataset,corruption,severity,tfds_name', [
    ('cifar10', 'gaussian_noise', 5, 'cifar10_corrupted/gaussian_noise_5'),
    ('mnist', 'shot_noise', None, 'mnist_corrupted/shot_noise'),
])
def test_mocked_read(tmp_path, mock_tfds, dataset, corruption, severity,
                     tfds_name):
    fake_prepared(tmp_path, tfds_name)
    with mock_tfds(num_examples=30):
        x, y = C.load_corrupted_test(dataset, corruption, severity,
                                     data_dir=tmp_path)
    assert x.shape == (30, 32, 32, 3) and x.dtype == np.uint8
    assert y.shape == (30,) and y.dtype == np.int32
    assert 0 <= y.min() and y.max() <= 9 and len(set(y)) > 1
    assert x.std() > 0  # random mock pixels, not a blank fill
    if dataset == 'mnist':  # gray: resized, then replicated to 3 channels
        assert (x[..., 0] == x[..., 1]).all() and (x[..., 0] == x[..., 2]).all()


class _Source:
    """Records with known uint8 pixels (covering 0..255) and labels."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.images)

    def __getitems__(self, keys):
        return [{'image': self.images[i], 'label': np.int64(self.labels[i])}
                for i in keys]


def _controlled(tfds_name, images, labels):
    """mock_data `as_data_source_fn` serving `images` as the 'test' split."""
    def as_data_source(builder, split, **kwargs):
        assert builder.info.full_name == f'{tfds_name}/1.0.0'
        assert split == ['test']  # the corrupted sets are test data only
        return [_Source(images, labels)]
    return tfds.testing.mock_data(as_data_source_fn=as_data_source)


@pytest.mark.parametrize('dataset,corruption,severity,tfds_name,shape', [
    ('cifar10', 'zoom_blur', 1, 'cifar10_corrupted/zoom_blur_1', (32, 32, 3)),
    ('mnist', 'canny_edges', None, 'mnist_corrupted/canny_edges', (28, 28, 1)),
])
def test_uint8_values_preserved_exactly(tmp_path, dataset, corruption,
                                        severity, tfds_name, shape):
    fake_prepared(tmp_path, tfds_name)
    n = 12
    # Every value 0..255 occurs, so a float scale or x*255 wrap would show.
    images = (np.arange(n * np.prod(shape)) % 256).astype(np.uint8)
    images = np.random.default_rng(0).permutation(images).reshape(n, *shape)
    labels = np.arange(n) % 10
    with _controlled(tfds_name, images, labels):
        x, y = C.load_corrupted_test(dataset, corruption, severity,
                                     data_dir=tmp_path, image_size=shape[0])
        x32, _ = C.load_corrupted_test(dataset, corruption, severity,
                                       data_dir=tmp_path)
    assert x.dtype == np.uint8 and x.shape == (n, *shape[:2], 3)
    assert np.array_equal(x, np.broadcast_to(images, x.shape))  # bit for bit
    assert np.array_equal(y, labels) and y.dtype == np.int32
    # Other sizes: the same bilinear resize as the clean data.
    assert np.array_equal(x32, to_rgb(images, 32))


def test_corrupted_test_set_is_cached(tmp_path, capsys):
    tfds_name = 'cifar10_corrupted/fog_2'
    fake_prepared(tmp_path, tfds_name)
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), np.uint8)
    labels = np.arange(6) % 10
    with _controlled(tfds_name, images, labels):
        x, y = C.load_corrupted_test('cifar10', 'fog', 2, data_dir=tmp_path)
    assert 'prepared CIFAR-10-C fog severity 2' in capsys.readouterr().out
    # No tfds reader at all now: a hit is the cached arrays.
    x2, y2 = C.load_corrupted_test('cifar10', 'fog', 2, data_dir=tmp_path)
    assert 'read cached CIFAR-10-C fog severity 2' in capsys.readouterr().out
    assert np.array_equal(x, x2) and np.array_equal(y, y2)


def test_out_of_range_label_fails(tmp_path):
    tfds_name = 'mnist_corrupted/fog'
    fake_prepared(tmp_path, tfds_name)
    images = np.zeros((3, 28, 28, 1), np.uint8)
    with _controlled(tfds_name, images, [0, 10, 1]), \
            pytest.raises(ValueError, match=r'MNIST-C fog: .*expected 0\.\.9'):
        C.load_corrupted_test('mnist', 'fog', None, data_dir=tmp_path)


@pytest.mark.parametrize('dataset,corruption,severity,full_name', [
    ('cifar10', 'gaussian_noise', 5, 'cifar10_corrupted/gaussian_noise_5/1.0.0'),
    ('mnist', 'rotate', None, 'mnist_corrupted/rotate/1.0.0'),
])
def test_missing_fails_fast(tmp_path, dataset, corruption, severity,
                            full_name, no_network):
    (tmp_path / full_name.rsplit('/', 1)[0] / '0.0.1').mkdir(parents=True)
    with pytest.raises(D.DatasetNotFoundError) as err:
        C.load_corrupted_test(dataset, corruption, severity, data_dir=tmp_path)
    # Fast: no download started and no connection tried (tfds would retry for minutes).
    assert no_network.downloads == [] and no_network.connections == []
    msg = str(err.value)
    assert '\n' not in msg
    assert full_name in msg and str(tmp_path) in msg
    assert 'found other versions: 0.0.1' in msg


@pytest.mark.parametrize('args,match', [
    (('cifar10', 'glass_blur', 1), 'corruption .glass_blur.; valid: '
                                   'brightness, .*frosted_glass_blur'),
    (('mnist', 'gaussian_noise', None), 'valid: identity, .*canny_edges'),
    (('cifar10', 'fog', 0), 'one of 1, 2, 3, 4, 5, got 0'),
    (('cifar10', 'fog', 6), 'one of 1, 2, 3, 4, 5, got 6'),
    (('cifar10', 'fog', None), 'one of 1, 2, 3, 4, 5, got None'),
    (('cifar10', 'fog', True), 'one of 1, 2, 3, 4, 5, got True'),
    (('cifar10', 'fog', 2.0), 'one of 1, 2, 3, 4, 5, got 2.0'),
    (('mnist', 'fog', 1), 'single severity level: pass severity=None, got 1'),
    (('svhn', 'fog', 1), "'svhn'; datasets with one: cifar10, mnist"),
])
def test_bad_arguments(tmp_path, args, match):
    with pytest.raises(ValueError, match=match):
        C.load_corrupted_test(*args, data_dir=tmp_path)


def test_tfds_corruptions_and_image_size_errors(tmp_path):
    assert C.tfds_corruptions('cifar10') is C.TFDS_CORRUPTIONS['cifar10']
    with pytest.raises(ValueError, match='datasets with one: cifar10, mnist'):
        C.tfds_corruptions('fashion_mnist')
    with pytest.raises(ValueError, match='image_size must be a positive int'):
        C.load_corrupted_test('cifar10', 'fog', 1, data_dir=tmp_path,
                              image_size=0)


def _mnist_like(n_train=200, n_test=120):
    """scikit-learn's 8 x 8 digits as 28 x 28 x 1 MNIST records: (train, test) splits."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = np.pad(np.kron(d.images, np.ones((3, 3))) * 255 / 16, ((0, 0), (2, 2), (2, 2)))
    x = x.round().astype(np.uint8)[..., None]
    return ((x[:n_train], d.target[:n_train]),
            (x[n_train:n_train + n_test], d.target[n_train:n_train + n_test]))


@pytest.mark.slow
def test_corrupted_mode_reads_mnist_c_from_tfds(tmp_path):
    """--mode=corrupted on an MNIST model: corruptions.source='auto' reads MNIST-C from tfds
    (its single level), next to the clean test set as 'identity'. The mocked MNIST is real
    digits and each MNIST-C config serves its own corruption of the same test images."""
    from tests.tiny_config import tiny_config
    from unode_jax.run import run
    train, (x_test, y_test) = _mnist_like()
    noisy = x_test + np.random.default_rng(0).normal(0, 100, x_test.shape)
    splits = {'mnist': [train, (x_test, y_test)],
              'mnist_corrupted/shot_noise': [(np.clip(noisy, 0, 255).astype(np.uint8), y_test)],
              'mnist_corrupted/rotate': [(np.rot90(x_test, axes=(1, 2)), y_test)]}

    def as_data_source(builder, split, **kwargs):
        name = builder.info.full_name.rsplit('/', 1)[0]
        assert split == (['train', 'test'] if name == 'mnist' else ['test'])
        return [_Source(*s) for s in splits[name]]

    for name in splits:
        fake_prepared(tmp_path, name)
    config = tiny_config(**{'data.name': 'mnist', 'data.data_dir': str(tmp_path),
                            'negatives.weights': 'uniform', 'optim.num_epochs': 1,
                            'negatives.transforms': ('rotation', 'mixup'),
                            'corruptions.names': ('shot_noise', 'rotate')})
    with tfds.testing.mock_data(as_data_source_fn=as_data_source):
        clean = run(config, str(tmp_path / 'run'))['classes']['0']
        summary = run(config, str(tmp_path / 'run'), mode='corrupted')
    assert summary['source'] == 'tfds' and summary['severity'] is None
    rows = summary['corruptions']
    assert list(rows) == ['identity', 'shot_noise', 'rotate']
    # The identity row is the clean evaluation: digit 0 against the others (0.96 measured).
    assert rows['identity']['auroc'] == pytest.approx(clean['auroc']) and clean['auroc'] > 0.8
    # Each corruption is read and scored on its own (0.42 and 0.35 measured).
    aurocs = [rows[n]['auroc'] for n in ('identity', 'shot_noise', 'rotate')]
    assert len(set(aurocs)) == 3 and max(aurocs[1:]) < aurocs[0] - 0.1, aurocs
    assert 'tfds corrupted test sets at their single level' in (
        tmp_path / 'run' / 'corrupted.md').read_text()
