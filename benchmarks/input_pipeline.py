"""Input-pipeline throughput: TFRecord read + JPEG decode + two 224px MoCo-v2 views + MLM and EDA text views +
tokenization, per CPU core, on JPEGs this script writes (~500x375, natural-image-like file sizes).

  python benchmarks/input_pipeline.py [--num_images 512] [--threads 1,2] [--batches 20]

Prints a table: threads, images/s, images/s per thread, and how many cores feed one accelerator at open_clip's
published ViT-B/32 rate (~850 images/s per A100) and at 3x that.
"""

import argparse
import io
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top
from PIL import Image  # pylint: disable=g-import-not-at-top

from benchmarks import host_info  # pylint: disable=g-import-not-at-top
from declip_jax import config as config_lib  # pylint: disable=g-import-not-at-top
from declip_jax.data import pipeline, write_tfrecords  # pylint: disable=g-import-not-at-top

OPEN_CLIP_A100_IMAGES_PER_S = 850
WORDS = ("a photo of the small large red blue green dog cat car tree house person on in with beach city "
         "street mountain river sunset black white old new two people riding playing sitting near").split()


def natural_like_jpeg(rng: np.random.Generator, height: int = 375, width: int = 500) -> bytes:
  """Smooth colour fields plus texture noise: JPEG sizes like photos (tens of KB), not like pure noise."""
  y, x = np.mgrid[0:height, 0:width].astype(np.float32)
  image = np.zeros((height, width, 3), np.float32)
  for c in range(3):
    fx, fy, phase = rng.uniform(0.002, 0.03, 2).tolist() + [rng.uniform(0, 6.3)]
    image[..., c] = 128 + 90 * np.sin(fx * x + phase) * np.cos(fy * y)
  image += rng.normal(0, 12, image.shape)
  buffer = io.BytesIO()
  Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
  return buffer.getvalue()


def write_data(directory: str, num_images: int) -> tuple[str, float]:
  """Writes shards of num_images records; returns (glob, mean JPEG size in KB)."""
  rng = np.random.default_rng(0)
  sizes = []
  images_dir = os.path.join(directory, "images")
  os.makedirs(images_dir)
  rows = []
  for i in range(num_images):
    data = natural_like_jpeg(rng)
    sizes.append(len(data))
    with open(os.path.join(images_dir, f"{i}.jpg"), "wb") as f:
      f.write(data)
    rows.append((f"{i}.jpg", " ".join(rng.choice(WORDS, size=int(rng.integers(6, 16))))))
  write_tfrecords.write_shards(images_dir, iter(rows), os.path.join(directory, "shards"), shard_size=64,
                               vocab_size=1000)
  return os.path.join(directory, "shards", "*.tfrecord"), float(np.mean(sizes)) / 1024


def benchmark(files: str, vocab: str, threads: int, batches: int, batch_size: int) -> float:
  """Images/s of train_dataset with a private pool of `threads` threads, after two warm-up batches."""
  c = config_lib.base_config()
  c.data.source = "tfrecord"
  c.data.tfrecord.files = files
  c.data.tokenizer = "word"
  c.data.vocab_path = vocab
  c.data.shuffle_window = 256
  c.train.batch_size = batch_size
  tokenizer = pipeline.build_tokenizer(c)
  options = tf.data.Options()
  options.threading.private_threadpool_size = threads
  options.threading.max_intra_op_parallelism = 1
  iterator = iter(pipeline.train_dataset(c, tokenizer).with_options(options))
  for _ in range(2):
    next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batches * batch_size / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--num_images", type=int, default=512)
  parser.add_argument("--threads", default="1,2")
  parser.add_argument("--batches", type=int, default=10)
  parser.add_argument("--batch_size", type=int, default=32)
  args = parser.parse_args()
  tf.config.set_visible_devices([], "GPU")
  with tempfile.TemporaryDirectory() as tmp:
    files, kb = write_data(tmp, args.num_images)
    vocab = os.path.join(tmp, "shards", "vocab.txt")
    print(f"host: {host_info.describe()}")
    print(f"{args.num_images} JPEGs of 500x375, mean {kb:.0f} KB; DeCLIP views at 224px; "
          f"{os.cpu_count()} CPU cores here.")
    print(f"| threads | images/s | images/s per thread | cores for {OPEN_CLIP_A100_IMAGES_PER_S} img/s | "
          f"cores for {3 * OPEN_CLIP_A100_IMAGES_PER_S} img/s |")
    print("|---|---|---|---|---|")
    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
      rate = benchmark(files, vocab, threads, args.batches, args.batch_size)
      per = rate / threads
      rows.append({"threads": threads, "images_per_s": rate})
      print(f"| {threads} | {rate:.0f} | {per:.0f} | {OPEN_CLIP_A100_IMAGES_PER_S / per:.0f} | "
            f"{3 * OPEN_CLIP_A100_IMAGES_PER_S / per:.0f} |", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
  main()
