"""User image files (PNG / JPEG, untrusted) -> the uint8 NHWC arrays the model uses.

Used by `--mode=predict --images=FOLDER_OR_GLOB` and to read outlier test sets
stored as image folders (e.g. ImageNet-30's test folder). Every image is
prepared exactly as the training data in `datasets.py`: decoded to 1 channel
(gray) or 3 (colour), resized to image_size^2 with `resize_bilinear` and gray
replicated to 3 channels by `_to_rgb`, in that order.

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

from unode_jax.data.datasets import _to_rgb

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


def list_images(folder_or_glob) -> list[str]:
    """Image files of a folder (recursively) or of a glob pattern (`**` allowed), sorted.

    A folder lists what the pattern FOLDER/**/* would: hidden files and folders
    (e.g. macOS `._name.jpg` resource forks) are skipped in both cases.
    """
    spec = os.path.expanduser(os.fspath(folder_or_glob))
    if os.path.isdir(spec):
        # Escaped: a folder name may contain glob characters such as '['.
        pattern = os.path.join(glob.escape(spec), '**', '*')
        where = f'folder {spec}'
    else:
        pattern = spec
        where = f'pattern {spec!r}'
    found = [p for p in glob.glob(pattern, recursive=True)
             if _has_image_extension(p) and os.path.isfile(p)]
    if not found:
        raise FileNotFoundError(
            f'no image files in {where} (looked for {", ".join(IMAGE_EXTENSIONS)}, '
            'any case)')
    return sorted(found)


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


def read_image(path, image_size: int) -> np.ndarray:
    """One PNG / JPEG file -> uint8 (image_size, image_size, 3), prepared as the training data.

    Raises ImageReadError (a ValueError) with a short reason for anything that
    is not a whole, supported PNG or JPEG image.
    """
    path = os.fspath(path)
    try:
        with open(path, 'rb') as fh:
            if not fh.read(1):
                raise ImageReadError(path, 'empty file')
            fh.seek(0)
            x = _decode(fh, path)
    except OSError as e:  # missing file, a folder, no permission, read error
        raise ImageReadError(path, f'cannot read file ({e.strerror or e})') from None
    if x.ndim == 2:
        x = x[..., None]  # gray stays 1 channel until _to_rgb, as in datasets.py
    return _to_rgb(x[None], image_size)[0]


def read_images(paths, image_size: int, *, progress: bool = False
                ) -> tuple[np.ndarray, list[int], dict[str, str]]:
    """Read many files; failures become error entries instead of exceptions.

    Returns (x uint8 (n_ok, S, S, 3), indices into `paths` of the images in x,
    {path: reason} for the files that could not be read).
    """
    paths = [os.fspath(p) for p in paths]
    images, ok, errors = [], [], {}
    for i, path in enumerate(tqdm(paths, desc='images', unit='img', disable=not progress)):
        try:
            images.append(read_image(path, image_size))
        except ImageReadError as e:
            errors[path] = e.reason
        else:
            ok.append(i)
    if images:
        x = np.stack(images)
    else:
        x = np.zeros((0, image_size, image_size, 3), np.uint8)
    return x, ok, errors
