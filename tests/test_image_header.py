"""Header dimensions of every format the pipeline decodes, equal to PIL's; None for what is not an image."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from declip_jax.data import image_header


def _encoded(fmt: str, height: int, width: int, **kwargs) -> bytes:
  pixels = np.random.default_rng(height * width).integers(0, 256, (height, width, 3), dtype=np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, fmt, **kwargs)
  return buffer.getvalue()


@pytest.mark.parametrize("fmt, kwargs", [
    ("JPEG", {}), ("JPEG", {"progressive": True}), ("JPEG", {"exif": b"Exif\x00\x00" + bytes(3000)}),
    ("PNG", {}), ("GIF", {}), ("BMP", {}), ("WEBP", {"lossless": False}), ("WEBP", {"lossless": True}),
    ("WEBP", {"exif": b"Exif\x00\x00" + bytes(100)})])
def test_dimensions_match_pil(fmt, kwargs):
  for height, width in [(37, 53), (300, 17), (1, 1)]:
    data = _encoded(fmt, height, width, **kwargs)
    assert Image.open(io.BytesIO(data)).size == (width, height)
    assert image_header.dimensions(data) == (height, width), (fmt, kwargs)
    assert int(image_header.pixels_in_graph(tf.constant(data))) == height * width, (fmt, kwargs)


def test_unknown_or_cut_headers_give_none():
  jpeg = _encoded("JPEG", 40, 30)
  for data in [b"", b"not an image", b"<html>404</html>", jpeg[:3], b"\x89PNG\r\n\x1a\n", b"RIFF\0\0\0\0WEBPVP8 "]:
    assert image_header.dimensions(data) is None
  for data in [b"", b"not an image", b"<html>404</html>", b"\x89PNG\r\n\x1a\n"[:4]]:
    assert int(image_header.pixels_in_graph(tf.constant(data))) == -1
