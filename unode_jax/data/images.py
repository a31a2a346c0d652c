"""User image files (PNG / JPEG, untrusted) -> the uint8 NHWC arrays the model uses.

Used by `--mode=predict --images=FOLDER_OR_GLOB`, to read outlier test sets
stored as image folders (e.g. ImageNet-30's test folder) and by the folder
datasets of `folders.py`. Every decoded image goes through `prepare`, the one
path shared by training, test and prediction images:
  * resize=None: resized straight to image_size^2 with `resize_bilinear`, as
    `datasets.py` prepares the (square) tfds data;
  * resize=R: the shorter side scaled to R, aspect kept, then the centre
    image_size^2 cut out -- torchvision's Resize(R) + CenterCrop(image_size)
    geometry, for photos that are not square (MVTecAD, ISIC, FGVC, ...).
Gray (1 channel) is replicated to 3 channels only at the end, as `prepare.to_rgb`
does. `pre_crop` margins, removed from the decoded image before `prepare`,
let a dataset drop what is not part of the picture (FGVC-Aircraft's
copyright banner).

Decoding is Pillow only, restricted to its PNG and JPEG plugins (nothing is
executed, no exotic parsers see the bytes). Whatever is wrong with a file
(empty, truncated, not an image, decompression bomb, unsupported mode) becomes
an `ImageReadError`; `read_images` turns those into error rows instead of
stopping the whole batch.

Choices:
  * Alpha (LA, RGBA, P with transparency) is dropped, not composited: the
    training data has no alpha, and dropping is what `convert('RGB')` and
    torchvision's ImageFolder loader (the reference code's way of reading image
    folders) do, so folder test sets score as they would there.
  * 16-bit gray PNG (mode I;16*, or I in older Pillow) is scaled to 8 bits as
    round(v * 255 / 65535), which maps 0 -> 0, 65535 -> 255 and 257 * k -> k;
    clipping would turn almost every pixel white.
  * EXIF orientation is applied (`ImageOps.exif_transpose`), so phone JPEGs
    are upright as they are shown to people.
"""
from __future__ import annotations

import contextlib
import glob
import os
import warnings

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from unode_jax.data.prepare import resize_bilinear, to_rgb

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')  # matched case-insensitively
# Only these Pillow plugins may parse the bytes, whatever the file is called.
_FORMATS = ('PNG', 'JPEG')

_GRAY_MODES = frozenset({'1', 'L', 'LA', 'La'})
_COLOUR_MODES = frozenset({'P', 'PA', 'RGB', 'RGBA', 'RGBa', 'RGBX', 'CMYK', 'YCbCr'})
_SIXTEEN_BIT_MODES = frozenset({'I', 'I;16', 'I;16L', 'I;16B', 'I;16N'})


class ImageReadError(ValueError):
    """One image file could not be read; `reason` says why in a few words."""

    def __init__(self, path, reason: str):
        super().__init__(f'{path}: {reason}')
        self.path = str(path)
        self.reason = reason


def _has_image_extension(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def _walk(folder: str):
    """Every non-hidden file under folder, following symlinked folders but entering each
    real folder once, so a link loop (`loop -> .`) cannot list a file again and again."""
    entered = set()
    for path, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(path)
        if real in entered:
            dirs[:] = []
            continue
        entered.add(real)
        dirs[:] = [d for d in dirs if not d.startswith('.')]
        yield from (os.path.join(path, f) for f in files if not f.startswith('.'))


def list_images(folder_or_glob) -> list[str]:
    """Image files of a folder (recursively) or of a glob pattern (`**` allowed), sorted.

    Hidden files and folders (e.g. macOS `._name.jpg` resource forks) are skipped in
    both cases. Each file is listed once: of the paths that resolve to the same file
    (symlinks, link loops) the shortest is kept, and a warning says how many were dropped.
    """
    spec = os.path.expanduser(os.fspath(folder_or_glob))
    if os.path.isdir(spec):
        candidates, where = _walk(spec), f'folder {spec}'
    else:
        candidates, where = glob.glob(spec, recursive=True), f'pattern {spec!r}'
    found = [p for p in candidates if _has_image_extension(p) and os.path.isfile(p)]
    if not found:
        raise FileNotFoundError(
            f'no image files in {where} (looked for {", ".join(IMAGE_EXTENSIONS)}, '
            'any case)')
    unique = {}
    for p in sorted(found, key=lambda p: (p.count(os.sep), p)):  # the shortest path wins
        unique.setdefault(os.path.realpath(p), p)
    if len(unique) < len(found):
        warnings.warn(f'{len(found) - len(unique)} of the {len(found)} image paths in {where} '
                      f'are the same file again (symlinks): {len(unique)} files, each read once',
                      stacklevel=2)
    return sorted(unique.values())


@contextlib.contextmanager
def _strict_decoding():
    """Truncated files and decompression bombs raise, whatever the process settings.

    Pillow only reads LOAD_TRUNCATED_IMAGES as a module global, so it is forced
    off for the decode and restored after (as catch_warnings does with the
    warning filters); a partly grey image would get a meaningless score.
    Like catch_warnings, this is not thread-safe.
    """
    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x MAX_IMAGE_PIXELS; refuse those too.
            warnings.simplefilter('error', Image.DecompressionBombWarning)
            yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _to_array(im: Image.Image, path: str) -> np.ndarray:
    """Decoded PIL image -> uint8 (H, W) for gray or (H, W, 3) for colour."""
    mode = im.mode
    if mode in _SIXTEEN_BIT_MODES:
        # PNG holds at most 16 bits; the clip only guards mode I's int32 range.
        v = np.clip(np.asarray(im).astype(np.float32), 0, 65535)
        return np.rint(v * (255 / 65535)).astype(np.uint8)
    if mode in _GRAY_MODES:
        return np.asarray(im.convert('L'))  # LA: alpha dropped; 1: 0/255
    if mode in _COLOUR_MODES:
        return np.asarray(im.convert('RGB'))  # alpha / palette transparency dropped
    raise ImageReadError(path, f'unsupported image mode {mode}')


def _decode(fh, path: str) -> np.ndarray:
    """Open file -> uint8 (H, W) or (H, W, 3); any failure is an ImageReadError."""
    try:
        with _strict_decoding(), Image.open(fh, formats=_FORMATS) as im:
            im.load()  # the full decode happens here, so truncated data raises now
            return _to_array(ImageOps.exif_transpose(im), path)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(path, 'not a PNG or JPEG image') from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageReadError(path, f'decompression bomb ({e})') from None
    except OSError as e:
        # Pillow's 'image file is truncated', 'broken data stream', ...
        raise ImageReadError(path, f'truncated or corrupt data ({e})') from None
    except Exception as e:  # noqa: BLE001
        # Pillow's parsers raise SyntaxError, struct.error, IndexError, ... on
        # malformed bytes; any of them means this one file is corrupt.
        raise ImageReadError(path, f'corrupt image ({type(e).__name__}: {e})') from None


def _check_geometry(image_size, resize, pre_crop) -> tuple[int, int, int, int] | None:
    """Validates prepare / read_image arguments; -> pre_crop as a tuple of 4 ints or None."""
    if (isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer))
            or image_size < 1):
        raise ValueError(f'image_size must be a positive int, got {image_size!r}')
    if resize is not None and (isinstance(resize, bool)
                               or not isinstance(resize, (int, np.integer))
                               or resize < image_size):
        raise ValueError(f'resize must be None or an int >= image_size ({image_size}), '
                         f'got {resize!r}')
    if pre_crop is None:
        return None
    margins = tuple(pre_crop)
    if (len(margins) != 4 or any(isinstance(m, bool) or not isinstance(m, (int, np.integer))
                                 or m < 0 for m in margins)):
        raise ValueError('pre_crop must be 4 non-negative ints (top, left, bottom, right), '
                         f'got {pre_crop!r}')
    return tuple(int(m) for m in margins)


def resized_shape(height: int, width: int, resize: int) -> tuple[int, int]:
    """(h, w) after scaling the shorter side to `resize`, as torchvision's Resize(int).

    The longer side is int(resize * long / short) (truncated, not rounded), so
    the output matches torchvision's geometry pixel for pixel.
    """
    if width <= height:
        return int(resize * height / width), resize
    return resize, int(resize * width / height)


def centre_crop_offsets(height: int, width: int, size: int) -> tuple[int, int]:
    """(top, left) of torchvision's CenterCrop(size): int(round((h - size) / 2.0)).

    Python's round (half to even) is what torchvision uses, so .5 cases agree too.
    """
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))


def prepare(x: np.ndarray, image_size: int, resize: int | None = None) -> np.ndarray:
    """One decoded uint8 image (H, W), (H, W, 1) or (H, W, 3) -> uint8 (S, S, 3), S=image_size.

    resize=None: straight bilinear resize to S x S (aspect not kept), exactly
    as `prepare.to_rgb` prepares the tfds datasets. resize=R (>= S): shorter
    side scaled to R, aspect kept (`resized_shape`), then the centre S x S
    (`centre_crop_offsets`). Gray stays 1 channel through the resize (3x less
    work) and is replicated to 3 channels at the end.
    """
    _check_geometry(image_size, resize, None)
    if x.ndim == 2:
        x = x[..., None]
    if x.dtype != np.uint8 or x.ndim != 3 or x.shape[-1] not in (1, 3) or 0 in x.shape:
        raise ValueError(f'prepare needs a non-empty uint8 (H, W), (H, W, 1) or (H, W, 3) '
                         f'image, got {x.dtype} {x.shape}')
    if resize is None:
        return to_rgb(x[None], image_size)[0]
    h, w = resized_shape(x.shape[0], x.shape[1], resize)
    if (h, w) != x.shape[:2]:
        x = resize_bilinear(x[None], h, w)[0]
    top, left = centre_crop_offsets(h, w, image_size)
    x = x[top:top + image_size, left:left + image_size]
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return np.ascontiguousarray(x)


def prepare_batch(x, image_size: int, resize: int | None = None) -> np.ndarray:
    """uint8 images (N, H, W) or (N, H, W, C), C = 1 or 3 -> uint8 (N, S, S, 3), each
    prepared as `prepare` prepares one read from a file (the Python API's input)."""
    x = np.asarray(x)
    if x.dtype != np.uint8 or x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3)):
        raise ValueError(f'images must be uint8 (N, H, W) or (N, H, W, C) with C = 1 or 3, '
                         f'got {x.dtype} {x.shape}')
    if not len(x):
        raise ValueError('no images given')
    _check_geometry(image_size, resize, None)
    if resize is None:  # One batched resize: each image as `prepare` resizes it alone.
        return to_rgb(x, image_size)
    return np.stack([prepare(im, image_size, resize) for im in x])


def read_image(path, image_size: int, *, resize: int | None = None,
               pre_crop=None) -> np.ndarray:
    """One PNG / JPEG file -> uint8 (image_size, image_size, 3), prepared by `prepare`.

    pre_crop: None, or (top, left, bottom, right) pixel margins cut off the
    decoded, upright image before `prepare` (e.g. (0, 0, 20, 0) removes
    FGVC-Aircraft's 20-pixel banner). An image no larger than its margins is
    an ImageReadError, like any other unusable file.

    Raises ImageReadError (a ValueError) with a short reason for anything that
    is not a whole, supported PNG or JPEG image; ValueError for bad arguments.
    """
    margins = _check_geometry(image_size, resize, pre_crop)
    path = os.fspath(path)
    try:
        with open(path, 'rb') as fh:
            if not fh.read(1):
                raise ImageReadError(path, 'empty file')
            fh.seek(0)
            x = _decode(fh, path)
    except OSError as e:  # missing file, a folder, no permission, read error
        raise ImageReadError(path, f'cannot read file ({e.strerror or e})') from None
    if margins is not None:
        top, left, bottom, right = margins
        h, w = x.shape[:2]
        if top + bottom >= h or left + right >= w:
            raise ImageReadError(path, f'{w}x{h} image too small to remove margins '
                                       f'(top, left, bottom, right) = {margins}')
        x = x[top:h - bottom, left:w - right]
    return prepare(x, image_size, resize)


def read_images(paths, image_size: int, *, progress: bool = False,
                resize: int | None = None, pre_crop=None, strict: bool = False,
                desc: str = 'images') -> tuple[np.ndarray, list[int], dict[str, str]]:
    """Read many files; failures become error entries instead of exceptions.

    resize and pre_crop are as in `read_image`; strict=True raises the first
    ImageReadError instead of collecting it. `desc` labels the progress bar.

    Returns (x uint8 (n_ok, S, S, 3), indices into `paths` of the images in x,
    {path: reason} for the files that could not be read).
    """
    _check_geometry(image_size, resize, pre_crop)  # bad arguments raise, not error rows
    paths = [os.fspath(p) for p in paths]
    # Filled in place: a list of arrays then np.stack would briefly need twice
    # the memory, which matters for tens of thousands of 224 px images.
    x = np.empty((len(paths), image_size, image_size, 3), np.uint8)
    ok, errors = [], {}
    for i, path in enumerate(tqdm(paths, desc=desc, unit='img', disable=not progress)):
        try:
            x[len(ok)] = read_image(path, image_size, resize=resize, pre_crop=pre_crop)
        except ImageReadError as e:
            if strict:
                raise
            errors[path] = e.reason
        else:
            ok.append(i)
    if len(ok) < len(paths):
        x = x[:len(ok)].copy()  # a copy, so the unused rows' memory is released
    return x, ok, errors
