"""CLIP ResNet port: outputs vs torch's (recorded fixtures), preprocessing vs PIL, weights
resolution. No torch here; tests/fixtures/make_clip_fixtures.py regenerates the fixtures."""
import hashlib
import os
import pathlib
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from unode_jax.models import clip, clip_resnet
from unode_jax.torch_io import weights as torch_weights
from unode_jax.torch_io.weights import CheckpointFormatError

FIXTURES = pathlib.Path(__file__).parent / 'fixtures' / 'clip'
# Fixture file -> the expected.npz entry its float32 port must reproduce.
FILES = {'rn_tiny_jit.pt': 'out_fp32', 'rn_tiny_jit_fp16.pt': 'out_fp16',
         'rn_tiny_state.pt': 'out_fp32'}
TINY = dict(layers=(1, 2, 1, 1), width=4, heads=2, output_dim=16, image_resolution=64)


def load(path):
    return torch_weights.load_state_dict(path, cache=False)  # No cache files in fixtures/.


@pytest.fixture(scope='module')
def expected():
    return dict(np.load(FIXTURES / 'expected.npz'))


@pytest.fixture(scope='module')
def encoder():
    return clip.load_image_encoder(FIXTURES / 'rn_tiny_jit.pt', batch_size=4, cache=False)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test may reach the network: only file:// URLs open."""

    def urlopen(url, *args, **kwargs):
        if not url.startswith('file:'):
            raise AssertionError(f'test tried to open {url}')
        return urllib.request.urlopen(url, *args, **kwargs)

    monkeypatch.setattr(clip, '_urlopen', urlopen)


# --------------------------------------------------------------------------------------
# The model and its weights.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize('name', sorted(FILES))
def test_matches_torch(name, expected):
    # Absolute tolerance 1e-4 on outputs of magnitude ~0.1 (float32 agrees to ~1e-7). The
    # fp16 archive is compared with torch's float32 run of its fp16-rounded weights.
    enc = clip.load_image_encoder(FIXTURES / name, batch_size=4, cache=False)
    out = enc(expected['images'])
    ref = expected[FILES[name]]
    assert out.shape == ref.shape == (4, 16) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4)
    if name.endswith('fp16.pt'):  # fp16 rounding moves outputs ~4e-5; we follow it.
        err16, err32 = (np.abs(out - expected[k]).max() for k in ('out_fp16', 'out_fp32'))
        assert err16 < err32 / 10, (err16, err32)


def test_config_and_attributes(encoder):
    assert encoder.config == TINY
    assert (encoder.resolution, encoder.output_dim, encoder.batch_size) == (64, 16, 4)
    assert encoder.source == os.fspath(FIXTURES / 'rn_tiny_jit.pt') and encoder.sha256 is None
    sd = load(FIXTURES / 'rn_tiny_state.pt')  # Visual-only keys, no prefix.
    assert 'conv1.weight' in sd and clip_resnet.clip_config_from_state_dict(sd) == TINY


def test_batching_pads_the_last_batch(encoder, expected):
    images = np.concatenate([expected['images']] * 2)[:7]  # Batches of 4 and 3 (+1 pad).
    np.testing.assert_allclose(encoder(images), expected['out_fp32'][[0, 1, 2, 3, 0, 1, 2]],
                               atol=1e-4)
    assert encoder(images[:0]).shape == (0, 16)
    with pytest.raises(ValueError, match=r'\(N, 64, 64, 3\)'):
        encoder(np.zeros((2, 32, 32, 3), np.float32))


def test_not_a_clip_resnet():
    vit = {'visual.class_embedding': np.zeros(768), 'visual.proj': np.zeros((768, 512)),
           'visual.conv1.weight': np.zeros((768, 3, 32, 32))}
    with pytest.raises(ValueError, match='only ResNet CLIP models'):
        clip_resnet.clip_config_from_state_dict(vit)
    torchvision = {'conv1.weight': np.zeros((64, 3, 7, 7)), 'fc.weight': np.zeros((10, 2048)),
                   'layer1.0.conv1.weight': np.zeros((64, 64, 1, 1))}
    with pytest.raises(ValueError, match='not a CLIP ResNet image encoder'):
        clip_resnet.convert_state_dict(torchvision)


def test_missing_unexpected_and_misshaped_keys():
    sd = load(FIXTURES / 'rn_tiny_jit.pt')
    broken = dict(sd, **{'visual.layer1.0.extra.weight': np.zeros(3)})
    del broken['visual.layer2.1.bn2.running_var']
    with pytest.raises(ValueError, match=r"missing \['layer2.1.bn2.running_var'\]; "
                                         r"unexpected \['layer1.0.extra.weight'\]"):
        clip_resnet.convert_state_dict(broken)
    misshaped = dict(sd, **{'visual.attnpool.q_proj.bias': np.zeros(7, np.float32)})
    with pytest.raises(ValueError, match=r'attnpool.q_proj.bias: \(7,\)'):
        clip_resnet.convert_state_dict(misshaped)


def test_variables_layout():
    sd = load(FIXTURES / 'rn_tiny_state.pt')
    v = clip_resnet.convert_state_dict(sd)
    p, s = v['params'], v['batch_stats']
    np.testing.assert_array_equal(p['layer2_0']['downsample_0']['kernel'],
                                  sd['layer2.0.downsample.0.weight'].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(p['attnpool']['c_proj']['kernel'],
                                  sd['attnpool.c_proj.weight'].T)
    np.testing.assert_array_equal(p['bn1']['scale'], sd['bn1.weight'])
    np.testing.assert_array_equal(s['layer1_0']['bn3']['var'], sd['layer1.0.bn3.running_var'])


# --------------------------------------------------------------------------------------
# Preprocessing and embedding.
# --------------------------------------------------------------------------------------


def smooth_images(n, h, w, seed=0):
    """Real-looking uint8 images: blurred noise blobs plus gradients and edges."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (n, h // 8 + 1, w // 8 + 1, 3))
    x = np.repeat(np.repeat(coarse, 8, 1), 8, 2)[:, :h, :w]
    x = 0.7 * x + 0.3 * np.linspace(0, 255, w)[None, None, :, None]
    return np.clip(x + rng.normal(0, 8, x.shape), 0, 255).astype(np.uint8)


def test_embed_equals_encoder_of_preprocess(encoder):
    images = smooth_images(5, 80, 100)  # Not 64 x 64: resized and cropped; 2 batches of 4.
    # At the encoder's batch size, preprocess runs embed's programs on embed's batches.
    x = clip.preprocess(images, 64, batch_size=encoder.batch_size)
    assert x.shape == (5, 64, 64, 3) and x.dtype == np.float32
    out = clip.embed(encoder, images, progress=True)
    assert out.shape == (5, 16) and out.dtype == np.float32
    np.testing.assert_array_equal(out, encoder(x))
    # Gray is RGB with equal channels. One channel is another program: the normalisation
    # rounds differently (2.4e-7 seen), and a resized value within an ulp of a half level
    # could round to the next level (none seen; each would move this encoder's output by
    # ~6e-8, measured by adding a level at a pixel).
    gray = images[..., 0]
    rgb = np.repeat(gray[..., None], 3, -1)
    level = 1 / 255 / min(clip.CLIP_STD)
    diff = np.abs(clip.preprocess(gray, 64) - clip.preprocess(rgb, 64))
    assert diff.max() <= level * 1.001 and np.sum(diff > 1e-6) <= 10, diff.max()
    np.testing.assert_allclose(clip.embed(encoder, gray[..., None]), clip.embed(encoder, rgb),
                               atol=2e-6)
    with pytest.raises(ValueError, match='uint8'):
        clip.embed(encoder, images.astype(np.float32))


def pil_preprocess(image, n):
    """CLIP's transform (torchvision Resize(n, BICUBIC) + CenterCrop(n) on a PIL image), as
    uint8 levels before ToTensor/Normalize."""
    h, w = image.shape[:2]
    nh, nw = (int(n * h / w), n) if w <= h else (n, int(n * w / h))
    im = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BICUBIC))
    top, left = int(round((nh - n) / 2)), int(round((nw - n) / 2))
    return im[top:top + n, left:left + n].astype(np.float32)


def test_preprocess_matches_pil():
    # PIL resamples in fixed point, so a value exactly between two levels can round the
    # other way: allow one uint8 level (1/255/std <= 0.015 after normalising) on under 0.1%
    # of values. Measured: at most 1 level on ~0.03% of values; without the per-pass
    # rounding and clipping we do as PIL, edges would differ by up to 8 levels.
    datasets = pytest.importorskip('sklearn.datasets')
    china, flower = datasets.load_sample_images().images  # Real photos, 427 x 640.
    cases = [(china, 224), (flower, 96),  # Downsampling (antialiased).
             (flower[100:180, 200:300], 224), (china[50:150, 300:420], 224),  # Upsampling.
             (china[:300, :201], 224)]  # Portrait: one side down, one up; odd crop offset.
    for image, n in cases:
        ours = clip.preprocess(image[None], n)[0]
        levels = (ours * np.asarray(clip.CLIP_STD) + np.asarray(clip.CLIP_MEAN)) * 255
        diff = np.abs(levels - pil_preprocess(image, n))
        assert diff.max() < 1.01, (image.shape, n, diff.max())
        assert (diff > 0.5).mean() < 1e-3, (image.shape, n, (diff > 0.5).mean())


def test_preprocess_identity_at_resolution():
    images = smooth_images(2, 64, 64)
    x = clip.preprocess(images, 64)
    expect = (images / 255.0 - np.asarray(clip.CLIP_MEAN)) / np.asarray(clip.CLIP_STD)
    np.testing.assert_allclose(x, expect, atol=1e-5)


# --------------------------------------------------------------------------------------
# resolve_clip_weights: never the network.
# --------------------------------------------------------------------------------------


def one_line_error(excinfo):
    msg = str(excinfo.value)
    assert '\n' not in msg and 'CLIP weights not found at' in msg
    assert clip.RN50_URL in msg and '--config.autoaug.embedder=random_cnn' in msg
    return msg


def test_resolve_explicit_path(tmp_path):
    path = FIXTURES / 'rn_tiny_state.pt'
    assert clip.resolve_clip_weights(path) == os.fspath(path)
    with pytest.raises(FileNotFoundError) as e:
        clip.resolve_clip_weights(tmp_path / 'nope.pt')
    assert str(tmp_path / 'nope.pt') in one_line_error(e)


def test_resolve_cached_and_no_download(tmp_path):
    target = tmp_path / 'clip' / 'RN50.pt'
    with pytest.raises(FileNotFoundError) as e:
        clip.resolve_clip_weights(cache_dir=tmp_path, download=False)
    assert str(target) in one_line_error(e)
    target.parent.mkdir()
    target.write_bytes(b'not the real RN50')
    assert clip.resolve_clip_weights(cache_dir=tmp_path, download=False) == str(target)
    # A cached file is checked against the published hash when loaded.
    with pytest.raises(CheckpointFormatError, match=f'official RN50.pt .{clip.RN50_SHA256}'):
        clip.load_image_encoder(target)


def serve(monkeypatch, path, sha256=None):
    """Point RN50_URL at a local file and make its sha256 (or the given one) RN50.pt's."""
    data = pathlib.Path(path).read_bytes()
    sha256 = sha256 or hashlib.sha256(data).hexdigest()
    monkeypatch.setattr(clip, 'RN50_URL', pathlib.Path(path).absolute().as_uri())
    monkeypatch.setattr(clip, 'RN50_SHA256', sha256)
    monkeypatch.setitem(torch_weights.KNOWN_SHA256, 'RN50.pt', sha256)
    return data


def test_download_success(tmp_path, monkeypatch, expected):
    data = serve(monkeypatch, FIXTURES / 'rn_tiny_jit_fp16.pt')
    path = clip.resolve_clip_weights(cache_dir=tmp_path)
    assert path == str(tmp_path / 'clip' / 'RN50.pt')
    assert pathlib.Path(path).read_bytes() == data
    assert os.listdir(tmp_path / 'clip') == ['RN50.pt']  # No .tmp left.
    enc = clip.load_image_encoder(path, batch_size=4)
    assert enc.sha256 == clip.RN50_SHA256  # Verified on load.
    np.testing.assert_allclose(enc(expected['images']), expected['out_fp16'], atol=1e-4)


def test_download_wrong_sha(tmp_path, monkeypatch):
    serve(monkeypatch, FIXTURES / 'rn_tiny_state.pt', sha256='0' * 64)
    with pytest.raises(FileNotFoundError) as e:
        clip.resolve_clip_weights(cache_dir=tmp_path)
    assert 'sha256 mismatch' in one_line_error(e)
    assert os.listdir(tmp_path / 'clip') == []


def test_download_unreachable(tmp_path, monkeypatch):
    def unreachable(url, timeout=None):
        assert timeout == clip.DOWNLOAD_TIMEOUT_S
        raise urllib.error.URLError('[Errno -3] Temporary failure in name resolution')

    monkeypatch.setattr(clip, '_urlopen', unreachable)
    with pytest.raises(FileNotFoundError) as e:
        clip.resolve_clip_weights(cache_dir=tmp_path)
    assert 'name resolution' in one_line_error(e)
    assert not (tmp_path / 'clip' / 'RN50.pt').exists()
