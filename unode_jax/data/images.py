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

# prepare, prepare_batch and the geometry live in prepare.py (numpy alone: the exported
# model's loader prepares with them); they are named here too, where callers find them.
from unode_jax.data.prepare import (centre_crop_offsets, check_geometry, prepare,
                                    prepare_batch, resized_shape)

__all__ = ['IMAGE_EXTENSIONS', 'ImageReadError', 'list_images', 'read_image', 'read_images',
           'prepare', 'prepare_batch', 'resized_shape', 'centre_crop_offsets']

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
    margins = check_geometry(image_size, resize, pre_crop)
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
    check_geometry(image_size, resize, pre_crop)  # bad arguments raise, not error rows
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
