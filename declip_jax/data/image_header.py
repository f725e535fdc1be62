"""Image dimensions read from the header bytes alone, before any decode: the check that stops decompression bombs
(a few KB declaring 30,000 x 30,000 pixels) from reaching a decoder that would allocate them.

Formats: JPEG (the first start-of-frame marker), PNG (IHDR), GIF (logical screen), BMP (info header), WebP
(VP8, VP8L and VP8X chunks). Pure Python on the first bytes; microseconds per image.
"""

import struct
from typing import Optional

_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # SOF0..SOF15 but DHT, JPG, DAC.
_JPEG_UNSIZED_MARKERS = frozenset(range(0xD0, 0xDA)) | {0x01}  # RSTn, SOI, EOI, TEM: no length field.


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
