"""Tests for unode_jax.data.images: user PNG / JPEG files -> uint8 NHWC, errors as rows."""
import os
import warnings

import numpy as np
import pytest
from PIL import Image, ImageFile

from unode_jax.data import images as I
from unode_jax.data.prepare import resize_bilinear, to_rgb

S = 16
_RNG = np.random.default_rng(0)


def _noise(h, w, c=None):
    shape = (h, w) if c is None else (h, w, c)
    return _RNG.integers(0, 256, shape, dtype=np.uint8)


def _rgb_with_exif_orientation(path, orientation):
    """40 wide x 20 tall JPEG, left half white, right half black, EXIF orientation set."""
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :20] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(a).save(path, quality=95, exif=exif)


@pytest.fixture
def folder(tmp_path):
    """Mixed sizes and modes, a nested folder, an upper-case extension, a stray .txt."""
    d = tmp_path / 'imgs'
    (d / 'sub' / 'deeper').mkdir(parents=True)
    Image.fromarray(_noise(8, 8)).save(d / 'a_gray_8x8.png')
    Image.fromarray(_noise(30, 40, 3)).save(d / 'b_rgb_40x30.png')
    Image.fromarray(_noise(30, 40, 4)).save(d / 'c_rgba.png')
    pal = Image.fromarray(_noise(30, 40, 3)).quantize(16)
    pal.info['transparency'] = 0
    pal.save(d / 'd_palette.png', transparency=0)
    sixteen = (_RNG.integers(0, 65536, (20, 20))).astype(np.uint16)
    Image.fromarray(sixteen).save(d / 'e_sixteen.png')
    Image.fromarray(_noise(200, 300, 3)).save(d / 'f_photo.jpg', quality=90)
    Image.new('CMYK', (40, 30), (10, 200, 30, 40)).save(d / 'g_cmyk.JPEG')
    Image.fromarray(_noise(30, 40, 2)).convert('LA').save(d / 'sub' / 'h_la.png')
    Image.fromarray(_noise(12, 12) > 127).save(d / 'sub' / 'deeper' / 'i_one_bit.jpeg')
    (d / 'notes.txt').write_text('not an image')
    (d / 'sub' / 'readme.md').write_text('# nor this')
    return d


EXPECTED_NAMES = ['a_gray_8x8.png', 'b_rgb_40x30.png', 'c_rgba.png', 'd_palette.png',
                  'e_sixteen.png', 'f_photo.jpg', 'g_cmyk.JPEG', 'sub/deeper/i_one_bit.jpeg',
                  'sub/h_la.png']


def _rel(paths, root):
    return [os.path.relpath(p, root).replace(os.sep, '/') for p in paths]


# -------------------------------------------------------------------- listing


def test_list_images_folder_recursive_sorted(folder):
    paths = I.list_images(folder)
    assert _rel(paths, folder) == EXPECTED_NAMES  # .txt / .md ignored, .JPEG kept
    assert all(isinstance(p, str) for p in paths)
    assert I.list_images(str(folder) + os.sep) == paths


def test_list_images_glob_patterns(folder):
    assert _rel(I.list_images(folder / '*.png'), folder) == [
        'a_gray_8x8.png', 'b_rgb_40x30.png', 'c_rgba.png', 'd_palette.png', 'e_sixteen.png']
    assert _rel(I.list_images(f'{folder}/**/*.png'), folder) == [
        'a_gray_8x8.png', 'b_rgb_40x30.png', 'c_rgba.png', 'd_palette.png', 'e_sixteen.png',
        'sub/h_la.png']
    assert _rel(I.list_images(f'{folder}/**/*'), folder) == EXPECTED_NAMES
    assert _rel(I.list_images(f'{folder}/sub/**/*.jp*g'), folder) == [
        'sub/deeper/i_one_bit.jpeg']
    assert _rel(I.list_images(folder / 'f_photo.jpg'), folder) == ['f_photo.jpg']


def test_list_images_skips_hidden_files(folder):
    Image.fromarray(_noise(8, 8)).save(folder / '._resource_fork.png', format='PNG')
    assert _rel(I.list_images(folder), folder) == EXPECTED_NAMES


def test_list_images_lists_each_file_once_through_symlinks(folder, tmp_path):
    """A link loop (`loop -> .`) and a second link to one file: each file listed once, with a
    warning that says how many paths were the same file; without links, no warning."""
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert _rel(I.list_images(folder), folder) == EXPECTED_NAMES
    (folder / 'loop').symlink_to('.', target_is_directory=True)
    (folder / 'again.png').symlink_to(folder / 'a_gray_8x8.png')
    outside = tmp_path / 'outside'
    outside.mkdir()
    Image.fromarray(_noise(8, 8)).save(outside / 'z.png', format='PNG')
    (folder / 'z_link.png').symlink_to(outside / 'z.png')  # another file: kept
    for spec in (folder, f'{folder}/**/*.png'):
        with pytest.warns(UserWarning, match=r'are the same file again \(symlinks\)'):
            got = _rel(I.list_images(spec), folder)
        want = [n for n in EXPECTED_NAMES if n.endswith('.png')] if str(spec).endswith(
            '.png') else EXPECTED_NAMES
        assert got == sorted(want + ['z_link.png'])
        assert len({os.path.realpath(folder / p) for p in got}) == len(got)


def test_list_images_nothing_found(tmp_path, folder):
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match='empty.*\\.png, \\.jpg, \\.jpeg'):
        I.list_images(empty)
    with pytest.raises(FileNotFoundError, match=r'\*\.gif'):
        I.list_images(folder / '*.gif')
    with pytest.raises(FileNotFoundError, match='notes'):
        I.list_images(folder / 'notes.txt')  # exists, but is not an image


# -------------------------------------------------------------------- reading


def test_read_images_every_mode(folder):
    paths = I.list_images(folder)
    x, ok, errors = I.read_images(paths, S, progress=True)
    assert errors == {}
    assert ok == list(range(len(paths)))
    assert x.shape == (len(paths), S, S, 3) and x.dtype == np.uint8
    for name in ('a_gray_8x8.png', 'e_sixteen.png', 'sub/h_la.png',
                 'sub/deeper/i_one_bit.jpeg'):
        gray = x[EXPECTED_NAMES.index(name)]
        assert (gray == gray[..., :1]).all(), name  # gray: 3 equal channels
    colour = x[EXPECTED_NAMES.index('b_rgb_40x30.png')]
    assert not (colour == colour[..., :1]).all()


@pytest.mark.parametrize('name', ['a_gray_8x8.png', 'b_rgb_40x30.png', 'f_photo.jpg'])
@pytest.mark.parametrize('size', [S, 8, 64])
def test_read_image_matches_training_preparation(folder, name, size):
    """Bit-exact with the datasets.py path: gray resized, then replicated."""
    with Image.open(folder / name) as im:
        want = to_rgb(np.array(im)[None], size)[0]
    got = I.read_image(folder / name, size)
    assert got.shape == (size, size, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, want)


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    a = np.array([[0, 257, 1000, 32768], [32896, 60000, 65280, 65535]], np.uint16)
    path = tmp_path / 'sixteen.png'
    Image.fromarray(np.tile(a, (2, 1))).save(path)  # 4x4: native size, no resize
    with Image.open(path) as im:
        assert im.mode.startswith('I;16')
    got = I.read_image(path, 4)
    want = np.array([[0, 1, 4, 128], [128, 233, 254, 255]], np.uint8)
    np.testing.assert_array_equal(got[..., 0], np.tile(want, (2, 1)))
    assert (got == got[..., :1]).all()


def test_alpha_is_dropped_not_composited(tmp_path):
    a = np.zeros((4, 4, 4), np.uint8)
    a[..., :3] = (200, 100, 50)
    a[..., 3] = 0  # fully transparent
    Image.fromarray(a, 'RGBA').save(tmp_path / 'rgba.png')
    la = np.stack([np.full((4, 4), 77, np.uint8), np.zeros((4, 4), np.uint8)], -1)
    Image.fromarray(la, 'LA').save(tmp_path / 'la.png')
    assert (I.read_image(tmp_path / 'rgba.png', 4) == (200, 100, 50)).all()
    assert (I.read_image(tmp_path / 'la.png', 4) == 77).all()


def test_palette_and_cmyk_colours(folder):
    with Image.open(folder / 'd_palette.png') as im:
        want = to_rgb(np.array(im.convert('RGB'))[None], S)[0]
    np.testing.assert_array_equal(I.read_image(folder / 'd_palette.png', S), want)
    with Image.open(folder / 'g_cmyk.JPEG') as im:
        assert im.mode == 'CMYK'
        rgb = np.array(im.convert('RGB'))
    got = I.read_image(folder / 'g_cmyk.JPEG', S)
    np.testing.assert_array_equal(got, to_rgb(rgb[None], S)[0])
    assert not (got == got[..., :1]).all()


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / 'phone.jpg'
    _rgb_with_exif_orientation(path, 6)  # shown rotated 90 degrees clockwise
    with Image.open(path) as im:
        assert im.size == (40, 20)
        upright = np.array(im.transpose(Image.Transpose.ROTATE_270))
    assert upright.shape == (40, 20, 3)
    got = I.read_image(path, S)
    np.testing.assert_array_equal(got, to_rgb(upright[None], S)[0])
    # The white left half of the stored image is the top once upright.
    assert got[:S // 2 - 1].min() > 200 and got[S // 2 + 1:].max() < 50


# --------------------------------------------------------------------- errors


@pytest.fixture
def bad_files(tmp_path):
    good = tmp_path / 'good.png'
    Image.fromarray(_noise(100, 100, 3)).save(good)
    data = good.read_bytes()
    files = {
        'empty.png': b'',
        'truncated.png': data[:len(data) // 2],
        'text.png': b'just some text, renamed to look like an image\n' * 10,
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    jpg = tmp_path / 'good.jpg'
    Image.fromarray(_noise(100, 100, 3)).save(jpg, quality=90)
    (tmp_path / 'truncated.jpg').write_bytes(jpg.read_bytes()[:jpg.stat().st_size // 2])
    Image.fromarray(_noise(8, 8, 3)).save(tmp_path / 'gif.png', format='GIF')
    return tmp_path


@pytest.mark.parametrize('name, reason', [
    ('empty.png', 'empty file'),
    ('truncated.png', 'truncated'),
    ('truncated.jpg', 'truncated'),
    ('text.png', 'not a PNG or JPEG image'),
    ('gif.png', 'not a PNG or JPEG image'),  # only the PNG / JPEG parsers run
    ('missing.png', 'cannot read file'),
])
def test_read_image_errors(bad_files, name, reason):
    with pytest.raises(I.ImageReadError, match=reason) as info:
        I.read_image(bad_files / name, S)
    assert isinstance(info.value, ValueError)
    assert reason in info.value.reason and info.value.path == str(bad_files / name)


@pytest.mark.parametrize('name', ['truncated.png', 'truncated.jpg'])
def test_truncation_caught_even_if_pillow_allows_it(bad_files, monkeypatch, name):
    monkeypatch.setattr(ImageFile, 'LOAD_TRUNCATED_IMAGES', True)
    with pytest.raises(I.ImageReadError, match='truncated'):
        I.read_image(bad_files / name, S)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the process setting is restored
    I.read_image(bad_files / 'good.png', S)


@pytest.mark.parametrize('max_pixels', [1000, 9000])  # 2x over: error; 1-2x over: warning
def test_decompression_bomb(bad_files, monkeypatch, max_pixels):
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', max_pixels)  # good.png is 100x100
    filters = list(warnings.filters)
    with pytest.raises(I.ImageReadError, match='decompression bomb'):
        I.read_image(bad_files / 'good.png', S)
    assert warnings.filters == filters  # the process's warning state is untouched


def test_read_images_collects_errors_and_reads_the_rest(bad_files):
    names = ['good.png', 'empty.png', 'truncated.png', 'good.jpg', 'text.png']
    paths = [bad_files / n for n in names]
    x, ok, errors = I.read_images(paths, S)
    assert ok == [0, 3]
    assert x.shape == (2, S, S, 3) and x.dtype == np.uint8
    np.testing.assert_array_equal(x[0], I.read_image(paths[0], S))
    assert set(errors) == {str(bad_files / n) for n in ('empty.png', 'truncated.png',
                                                        'text.png')}
    assert errors[str(bad_files / 'empty.png')] == 'empty file'
    assert 'truncated' in errors[str(bad_files / 'truncated.png')]


def test_read_images_all_failing(bad_files):
    x, ok, errors = I.read_images([bad_files / 'empty.png'], S)
    assert x.shape == (0, S, S, 3) and x.dtype == np.uint8
    assert ok == [] and list(errors.values()) == ['empty file']


# ---------------------------------------------------------- resize + centre crop


@pytest.mark.parametrize('h, w, resize, shape', [
    (30, 50, 20, (20, 33)),     # landscape: long side int(20 * 50 / 30) = int(33.3)
    (50, 30, 20, (33, 20)),     # portrait
    (37, 37, 20, (20, 20)),     # square
    (101, 64, 20, (31, 20)),    # int(31.56): truncated, not rounded
    (10, 12, 20, (20, 24)),     # upscaling
])
def test_resized_shape_is_torchvision_resize_int(h, w, resize, shape):
    assert I.resized_shape(h, w, resize) == shape


@pytest.mark.parametrize('h, w, size, offsets', [
    (20, 33, 16, (2, 8)),    # (33 - 16) / 2 = 8.5 rounds half to even: 8, as torchvision
    (20, 35, 16, (2, 10)),   # 9.5 -> 10
    (33, 20, 16, (8, 2)),
    (16, 16, 16, (0, 0)),
])
def test_centre_crop_offsets_are_torchvision_centercrop(h, w, size, offsets):
    assert I.centre_crop_offsets(h, w, size) == offsets


@pytest.mark.parametrize('h, w', [(30, 50), (50, 30), (37, 37), (101, 64)])
def test_prepare_resize_then_centre_crop(h, w):
    x = _noise(h, w, 3)
    got = I.prepare(x, S, 20)
    assert got.shape == (S, S, 3) and got.dtype == np.uint8
    # Restated with numpy: torchvision's Resize(20) size, then CenterCrop(S) offsets.
    short, long = min(h, w), max(h, w)
    new_long = int(20 * long / short)
    nh, nw = (new_long, 20) if h > w else (20, new_long)
    top, left = int(round((nh - S) / 2.0)), int(round((nw - S) / 2.0))
    want = resize_bilinear(x[None], nh, nw)[0, top:top + S, left:left + S]
    np.testing.assert_array_equal(got, want)
    # And with PIL's own bilinear resize and crop box: equal up to its fixed-point rounding.
    pil = Image.fromarray(x).resize((nw, nh), Image.BILINEAR).crop(
        (left, top, left + S, top + S))
    assert np.abs(got.astype(int) - np.asarray(pil, int)).max() <= 1


def test_prepare_resize_keeps_aspect_of_a_pattern():
    """A 20x40 image: left half white. Resize(16) + crop 16 keeps the middle: half white."""
    x = np.zeros((20, 40), np.uint8)
    x[:, :20] = 255
    got = I.prepare(x, S, S)  # -> 16 x 32, crop columns 8..23, the white edge at 16
    assert (got[:, :7] == 255).all() and (got[:, 9:] == 0).all()
    assert (got == got[..., :1]).all()  # gray replicated at the end


def test_prepare_gray_stays_one_channel_until_the_end():
    x = _noise(30, 50)
    got = I.prepare(x, S, 24)
    one = I.prepare(np.stack([x] * 3, -1), S, 24)
    np.testing.assert_array_equal(got, one)  # same numbers, 3x less work for gray
    np.testing.assert_array_equal(got[..., 0], I.prepare(x[..., None], S, 24)[..., 2])


def test_prepare_without_resize_is_the_training_path():
    x = _noise(30, 50, 3)
    np.testing.assert_array_equal(I.prepare(x, S), to_rgb(x[None], S)[0])


@pytest.mark.parametrize('kwargs, match', [
    ({'resize': 8}, 'resize must be'),       # smaller than image_size
    ({'resize': 20.0}, 'resize must be'),
    ({'resize': True}, 'resize must be'),
])
def test_prepare_and_read_reject_bad_resize(folder, kwargs, match):
    with pytest.raises(ValueError, match=match):
        I.prepare(_noise(30, 50, 3), S, **kwargs)
    with pytest.raises(ValueError, match=match):
        I.read_images([folder / 'b_rgb_40x30.png'], S, **kwargs)  # raised, not an error row


def test_prepare_rejects_bad_arrays():
    with pytest.raises(ValueError, match='uint8'):
        I.prepare(np.zeros((4, 4, 3), np.float32), S)
    with pytest.raises(ValueError, match='uint8'):
        I.prepare(np.zeros((4, 4, 4), np.uint8), S)


def test_read_image_with_resize_matches_prepare(folder):
    for name in ('a_gray_8x8.png', 'b_rgb_40x30.png', 'f_photo.jpg'):
        with Image.open(folder / name) as im:
            a = np.array(im)
        np.testing.assert_array_equal(I.read_image(folder / name, S, resize=20),
                                      I.prepare(a, S, 20))


# ------------------------------------------------------------------- pre_crop


def test_pre_crop_removes_margins_before_preparation(tmp_path):
    a = np.full((50, 60, 3), 40, np.uint8)
    a[-20:] = (255, 0, 255)  # a banner at the bottom
    a[:3] = 200              # and a stripe at the top
    Image.fromarray(a).save(tmp_path / 'x.png')
    got = I.read_image(tmp_path / 'x.png', S, pre_crop=(3, 0, 20, 0))
    assert (got == 40).all()
    got = I.read_image(tmp_path / 'x.png', S, resize=S, pre_crop=(3, 2, 20, 1))
    np.testing.assert_array_equal(got, I.prepare(a[3:30, 2:59], S, S))
    assert (I.read_image(tmp_path / 'x.png', S)[-4:] != 40).any()  # the banner, uncropped


def test_pre_crop_larger_than_the_image_is_an_error_row(tmp_path):
    Image.fromarray(_noise(10, 10, 3)).save(tmp_path / 'small.png')
    with pytest.raises(I.ImageReadError, match='too small'):
        I.read_image(tmp_path / 'small.png', S, pre_crop=(0, 0, 10, 0))
    x, ok, errors = I.read_images([tmp_path / 'small.png'], S, pre_crop=(5, 0, 5, 0))
    assert ok == [] and 'too small' in errors[str(tmp_path / 'small.png')]


@pytest.mark.parametrize('pre_crop', [(0, 0, 20), (0, 0, -1, 0), (0, 0, 2.0, 0), 'abcd'])
def test_bad_pre_crop(folder, pre_crop):
    with pytest.raises(ValueError, match='pre_crop'):
        I.read_image(folder / 'b_rgb_40x30.png', S, pre_crop=pre_crop)


def test_read_images_strict_raises_the_first_error(bad_files):
    paths = [bad_files / n for n in ('good.png', 'empty.png', 'text.png')]
    with pytest.raises(I.ImageReadError, match='empty file') as info:
        I.read_images(paths, S, strict=True)
    assert info.value.path == str(bad_files / 'empty.png')
    x, ok, _ = I.read_images(paths[:1], S, strict=True, resize=20, desc='strict')
    assert ok == [0] and x.shape == (1, S, S, 3)
