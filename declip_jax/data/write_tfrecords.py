"""Writes image-caption TFRecord shards in img2dataset's `tfrecord` layout from a folder of images and a caption
file, and a word vocabulary of the captions:

  python -m declip_jax.data.write_tfrecords --images_dir=photos/ --captions=captions.csv --output_dir=shards/

`--captions` is a CSV (header with `--image_column` and `--caption_column`, default `image` and `caption`) or a
JSONL file with those keys; image paths are relative to `--images_dir`. Each record is a tf.train.Example with
`key` (9-digit string), `jpg` (the image file's bytes, unchanged: any format tf.io.decode_image reads) and `txt`
(the caption). Shards are `<output_dir>/<5-digit shard>.tfrecord`, with `<shard>_stats.json`; rows whose image
file is missing are reported and left out. Then train with
`--config.data.source=tfrecord --config.data.tfrecord.files='<output_dir>/*.tfrecord'
--config.data.vocab_path=<output_dir>/vocab.txt`.
"""

import collections
import json
import re
from typing import Iterator

import tensorflow as tf
from absl import app, flags, logging
from etils import epath

from declip_jax.data import caption_files

_IMAGES_DIR = flags.DEFINE_string("images_dir", None, "Folder the caption file's image paths are relative to.")
_CAPTIONS = flags.DEFINE_string("captions", None, "CSV or JSONL file of (image path, caption) rows.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where the shards go.")
_IMAGE_COLUMN = flags.DEFINE_string("image_column", "image", "Column / key holding the image path.")
_CAPTION_COLUMN = flags.DEFINE_string("caption_column", "caption", "Column / key holding the caption.")
_SHARD_SIZE = flags.DEFINE_integer("shard_size", 10_000, "Records per shard (img2dataset's default).")
_VOCAB_WORDS = flags.DEFINE_integer("vocab_words", 30_000, "Most frequent caption words written to vocab.txt.")

_WORD = re.compile(r"[a-z0-9']+")


def example(key: str, image_bytes: bytes, caption: str | bytes) -> bytes:
  """One serialized tf.train.Example in img2dataset's layout."""
  caption = caption.encode() if isinstance(caption, str) else caption
  feature = {"key": tf.train.Feature(bytes_list=tf.train.BytesList(value=[key.encode()])),
             "jpg": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_bytes])),
             "txt": tf.train.Feature(bytes_list=tf.train.BytesList(value=[caption]))}
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_shards(images_dir: str, rows: Iterator[tuple[str, str]], output_dir: str, shard_size: int,
                 vocab_size: int) -> dict:
  """Writes the shards and vocab.txt; returns {"records", "shards", "missing_images"}."""
  out = epath.Path(output_dir)
  out.mkdir(parents=True, exist_ok=True)
  words = collections.Counter()
  records, shard, missing, writer, in_shard = 0, -1, [], None, 0

  def close_shard():
    if writer is not None:
      writer.close()
      (out / f"{shard:05d}_stats.json").write_text(json.dumps({"count": in_shard, "successes": in_shard}))

  for image_path, caption in rows:
    path = epath.Path(images_dir) / image_path
    if not path.exists():
      missing.append(image_path)
      continue
    if writer is None or in_shard == shard_size:
      close_shard()
      shard, in_shard = shard + 1, 0
      writer = tf.io.TFRecordWriter(str(out / f"{shard:05d}.tfrecord"))
    writer.write(example(f"{shard:05d}{in_shard:04d}", path.read_bytes(), caption))
    words.update(_WORD.findall(caption.lower()))
    records, in_shard = records + 1, in_shard + 1
  close_shard()
  (out / "vocab.txt").write_text("".join(f"{w}\n" for w, _ in words.most_common(vocab_size)))
  return {"records": records, "shards": shard + 1, "missing_images": missing}


def main(argv):
  del argv
  result = write_shards(_IMAGES_DIR.value, caption_files.read_rows(_CAPTIONS.value, _IMAGE_COLUMN.value, _CAPTION_COLUMN.value),
                        _OUTPUT_DIR.value, _SHARD_SIZE.value, _VOCAB_WORDS.value)
  if result["missing_images"]:
    logging.warning("%d images not found, left out (first: %s).", len(result["missing_images"]),
                    result["missing_images"][:5])
  print(f"wrote {result['records']} records in {result['shards']} shards and vocab.txt to {_OUTPUT_DIR.value}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["images_dir", "captions", "output_dir"])
  app.run(main)
