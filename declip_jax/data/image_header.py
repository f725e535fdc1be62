"""Image dimensions read from the header bytes alone, before any decode: the check that stops decompression bombs
(a few KB declaring 30,000 x 30,000 pixels) from reaching a decoder that would allocate them.

Formats: JPEG (the first start-of-frame marker), PNG (IHDR), GIF (logical screen), BMP (info header), WebP
(VP8, VP8L and VP8X chunks). `dimensions` is pure Python on the first bytes (microseconds per image);
`pixels_in_graph` is the same check in TF ops.
"""

import struct
from typing import Optional

import tensorflow as tf

_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # SOF0..SOF15 but DHT, JPG, DAC.
_JPEG_UNSIZED_MARKERS = frozenset(range(0xD0, 0xDA)) | {0x01}  # RSTn, SOI, EOI, TEM: no length field.
_ZEROS = "\0" * 32  # Pads a header cut short.


def _jpeg(data: bytes) -> Optional[tuple[int, int]]:
  pos = 2
  while pos + 4 <= len(data):
    if data[pos] != 0xFF:
      return None
    marker = data[pos + 1]
    if marker == 0xFF:  # Fill byte.
      pos += 1
      continue
    if marker in _JPEG_UNSIZED_MARKERS:
      pos += 2
      continue
    (length,) = struct.unpack(">H", data[pos + 2: pos + 4])
    if marker in _JPEG_FRAME_MARKERS:
      if pos + 9 > len(data):
        return None
      height, width = struct.unpack(">HH", data[pos + 5: pos + 9])
      return height, width
    if marker == 0xDA or length < 2:  # Start of scan before any frame header, or a broken length.
      return None
    pos += 2 + length
  return None


def _webp(data: bytes) -> Optional[tuple[int, int]]:
  chunk = data[12:16]
  if chunk == b"VP8 " and len(data) >= 30:
    width, height = struct.unpack("<HH", data[26:30])
    return height & 0x3FFF, width & 0x3FFF
  if chunk == b"VP8L" and len(data) >= 25:
    (bits,) = struct.unpack("<I", data[21:25])
    return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
  if chunk == b"VP8X" and len(data) >= 30:
    width = int.from_bytes(data[24:27], "little") + 1
    height = int.from_bytes(data[27:30], "little") + 1
    return height, width
  return None


def dimensions(data: bytes) -> Optional[tuple[int, int]]:
  """(height, width) that the image's header declares, or None when the format is not recognised or the header
  is cut short (the decoder then decides)."""
  if data[:3] == b"\xff\xd8\xff":
    return _jpeg(data)
  if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
    width, height = struct.unpack(">II", data[16:24])
    return height, width
  if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
    width, height = struct.unpack("<HH", data[6:10])
    return height, width
  if data[:2] == b"BM" and len(data) >= 26:
    width, height = struct.unpack("<ii", data[18:26])
    return abs(height), abs(width)
  if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
    return _webp(data)
  return None


def _int_at(data: tf.Tensor, offset: int, size: int, little_endian: bool) -> tf.Tensor:
  """The unsigned integer of `size` bytes at `offset` of a scalar string (0 where the string is shorter)."""
  raw = tf.io.decode_raw(tf.strings.substr(tf.strings.join([data, _ZEROS]), offset, size), tf.uint8)
  weights = [256 ** i for i in range(size)]
  return tf.reduce_sum(tf.cast(raw, tf.int64) * tf.constant(weights if little_endian else weights[::-1], tf.int64))


def pixels_in_graph(data: tf.Tensor) -> tf.Tensor:
  """The pixel count that an image's header declares, in TF ops (for decoding in the graph); -1 when the format
  is not recognised. JPEG's comes from `tf.image.extract_jpeg_shape`, which raises on a broken header."""
  head = tf.strings.substr(tf.strings.join([data, _ZEROS]), 0, 16)
  png = _int_at(data, 16, 4, False) * _int_at(data, 20, 4, False)
  gif = _int_at(data, 6, 2, True) * _int_at(data, 8, 2, True)
  bmp_h = _int_at(data, 22, 4, True)
  bmp = _int_at(data, 18, 4, True) * tf.where(bmp_h >= 2**31, 2**32 - bmp_h, bmp_h)
  chunk = tf.strings.substr(head, 12, 4)
  vp8 = tf.bitwise.bitwise_and(_int_at(data, 26, 2, True), 0x3FFF) * tf.bitwise.bitwise_and(
      _int_at(data, 28, 2, True), 0x3FFF)
  bits = _int_at(data, 21, 4, True)
  vp8l = (tf.bitwise.bitwise_and(bits, 0x3FFF) + 1) * (tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, 14),
                                                                                0x3FFF) + 1)
  vp8x = (_int_at(data, 24, 3, True) + 1) * (_int_at(data, 27, 3, True) + 1)
  webp = tf.where(tf.equal(chunk, "VP8 "), vp8, tf.where(tf.equal(chunk, "VP8L"), vp8l,
                                                          tf.where(tf.equal(chunk, "VP8X"), vp8x, -1)))
  is_webp = tf.equal(tf.strings.substr(head, 0, 4), "RIFF") & tf.equal(tf.strings.substr(head, 8, 4), "WEBP")
  is_jpeg = tf.equal(tf.strings.substr(head, 0, 3), b"\xff\xd8\xff")

  def jpeg():
    shape = tf.cast(tf.image.extract_jpeg_shape(data), tf.int64)
    return shape[0] * shape[1]

  other = tf.where(tf.equal(tf.strings.substr(head, 0, 8), b"\x89PNG\r\n\x1a\n"), png,
                   tf.where(tf.equal(tf.strings.substr(head, 0, 3), "GIF"), gif,
                            tf.where(tf.equal(tf.strings.substr(head, 0, 2), "BM"), bmp,
                                     tf.where(is_webp, webp, tf.constant(-1, tf.int64)))))
  return tf.cond(is_jpeg, jpeg, lambda: other)
