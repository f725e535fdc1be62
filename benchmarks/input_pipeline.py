"""Input-pipeline throughput and its Python share: TFRecord read + decode + two 224px MoCo-v2 views + MLM and EDA
text views + two tokenizations, per CPU core, on JPEGs this script writes (~500x375, natural-image-like sizes).

  python benchmarks/input_pipeline.py [--tokenizers word,clip_bpe,clip_bpe_python] [--threads 1,2]

`clip_bpe` is the recipe's tokenizer (OpenAI's merges file, from the open_clip package by default) as the
pipeline runs it (plain-ASCII captions in TF ops); `clip_bpe_python` the same ids with every caption through the
Python tokenizer in a `tf.numpy_function` (how it ran before). A fraction `--non_plain_fraction` of the captions
carry an accent or an HTML entity, as scraped alt-text does; those go to Python in either case.

The Python share is what limits scaling with cores (Python holds the GIL): measured by a GIL probe, a pure-Python
counting thread beside the pipeline running on `threads` threads (1 by default, so that on a small machine
the probe has a core of its own), as 1 - its rate beside the pipeline / its rate alone; and directly, as the
wall time per image spent inside the pipeline's Python functions (the decode's py_function and the tokenizer's
numpy_function: an upper bound on the GIL they hold).

Prints a table: tokenizer, threads, images/s, per thread, Python share, Python us per image, and the cores that
feed one accelerator at open_clip's published ViT-B/32 rate (~850 images/s per A100) and at 3x that.
"""

import argparse
import importlib.util
import io
import json
import os
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top
from PIL import Image  # pylint: disable=g-import-not-at-top

from benchmarks import host_info  # pylint: disable=g-import-not-at-top
from declip_jax import config as config_lib  # pylint: disable=g-import-not-at-top
from declip_jax.data import pipeline, tfrecord_source, write_tfrecords  # pylint: disable=g-import-not-at-top

OPEN_CLIP_A100_IMAGES_PER_S = 850
WORDS = ("a photo of the small large red blue green dog cat car tree house person on in with beach city "
         "street mountain river sunset black white old new two people riding playing sitting near").split()
NON_PLAIN = ("café", "naïve", "&amp;", "Zürich", "&quot;best&quot;", "🙂")


def open_clip_merges() -> str:
  """OpenAI's CLIP merges file inside the installed open_clip package ('' without it)."""
  spec = importlib.util.find_spec("open_clip")
  return os.path.join(os.path.dirname(spec.origin), "bpe_simple_vocab_16e6.txt.gz") if spec else ""


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


def write_data(directory: str, num_images: int, non_plain_fraction: float) -> tuple[str, float]:
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
    words = list(rng.choice(WORDS, size=int(rng.integers(6, 16))))
    if rng.random() < non_plain_fraction:
      words[int(rng.integers(len(words)))] = str(rng.choice(NON_PLAIN))
    rows.append((f"{i}.jpg", " ".join(words)))
  write_tfrecords.write_shards(images_dir, iter(rows), os.path.join(directory, "shards"), shard_size=64,
                               vocab_size=1000)
  return os.path.join(directory, "shards", "*.tfrecord"), float(np.mean(sizes)) / 1024


class PythonTime:
  """Wall time spent inside wrapped Python callables (summed over threads)."""

  def __init__(self):
    self.seconds = 0.0
    self._lock = threading.Lock()

  def wrap(self, fn):
    def timed(*args):
      start = time.perf_counter()
      try:
        return fn(*args)
      finally:
        with self._lock:
          self.seconds += time.perf_counter() - start
    return timed


class GilProbe(threading.Thread):
  """A pure-Python counting loop, idle except inside `rate_over`: its rate falls by the fraction of time other
  threads hold the GIL."""

  def __init__(self):
    super().__init__(daemon=True)
    self.count = 0
    self._counting, self._stopping = threading.Event(), threading.Event()

  def run(self):
    while not self._stopping.is_set():
      if not self._counting.wait(0.05):
        continue
      for _ in range(1000):
        pass
      self.count += 1

  def rate_over(self, work) -> float:
    """Runs `work()` while counting; returns counts per second."""
    self._counting.set()
    start_count, start = self.count, time.perf_counter()
    try:
      work()
    finally:
      self._counting.clear()
    return (self.count - start_count) / (time.perf_counter() - start)

  def stop(self):
    self._stopping.set()
    self.join()


def build_iterator(files: str, vocab: str, tokenizer_name: str, merges: str, threads: int, batch_size: int):
  c = config_lib.base_config()
  c.data.source = "tfrecord"
  c.data.tfrecord.files = files
  c.data.tokenizer = "word" if tokenizer_name == "word" else "clip_bpe"
  c.data.vocab_path = vocab if tokenizer_name == "word" else merges
  c.data.shuffle_window = 256
  c.train.batch_size = batch_size
  tokenizer = pipeline.build_tokenizer(c)
  python_time = PythonTime()
  if tokenizer_name == "clip_bpe_python":
    numpy_tokenize = python_time.wrap(lambda t: tokenizer.tokenize_numpy(list(t)))

    def all_in_python(texts):
      texts = tf.convert_to_tensor(texts)
      ids = tf.numpy_function(numpy_tokenize, [tf.reshape(texts, [-1])], tf.int32, stateful=False)
      ids = tf.reshape(ids, [-1, tokenizer.context_length])
      return ids[0] if texts.shape.rank == 0 else ids

    tokenizer.tokenize = all_in_python
  elif tokenizer_name == "clip_bpe":
    tokenizer.tokenize_numpy = python_time.wrap(tokenizer.tokenize_numpy)
  options = tf.data.Options()
  options.threading.private_threadpool_size = threads
  options.threading.max_intra_op_parallelism = 1
  original_decode = tfrecord_source._decode_or_flag  # pylint: disable=protected-access
  tfrecord_source._decode_or_flag = python_time.wrap(original_decode)  # pylint: disable=protected-access
  try:
    iterator = iter(pipeline.train_dataset(c, tokenizer).with_options(options))
  finally:
    tfrecord_source._decode_or_flag = original_decode  # pylint: disable=protected-access
  for _ in range(2):
    next(iterator)
  return iterator, python_time


def benchmark(files: str, vocab: str, tokenizer_name: str, merges: str, threads: int, batches: int,
              batch_size: int, probe: GilProbe, probe_alone: float) -> dict:
  """Images/s of train_dataset on a private pool of `threads` threads (after two warm-up batches), then the GIL
  probe's slowdown over as many batches again."""
  iterator, python_time = build_iterator(files, vocab, tokenizer_name, merges, threads, batch_size)
  start_python, start = python_time.seconds, time.perf_counter()
  for _ in range(batches):
    next(iterator)
  wall = time.perf_counter() - start
  images = batches * batch_size
  python_us = (python_time.seconds - start_python) / images * 1e6

  def more():
    for _ in range(batches):
      next(iterator)

  beside = probe.rate_over(more)
  return {"tokenizer": tokenizer_name, "threads": threads, "images_per_s": images / wall,
          "python_share": max(0.0, 1 - beside / probe_alone), "python_us_per_image": python_us}
def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--num_images", type=int, default=512)
  parser.add_argument("--tokenizers", default="word,clip_bpe,clip_bpe_python")
  parser.add_argument("--merges", default=open_clip_merges(), help="CLIP merges file (default: open_clip's)")
  parser.add_argument("--non_plain_fraction", type=float, default=0.05)
  parser.add_argument("--threads", default="1,2")
  parser.add_argument("--batches", type=int, default=10)
  parser.add_argument("--batch_size", type=int, default=32)
  args = parser.parse_args()
  tf.config.set_visible_devices([], "GPU")
  names = args.tokenizers.split(",")
  if any(n != "word" for n in names) and not args.merges:
    parser.error("clip_bpe needs OpenAI's merges file: pip install -r requirements-interop.txt, or --merges=PATH")
  probe = GilProbe()
  probe.start()
  probe_alone = probe.rate_over(lambda: time.sleep(2.0))
  with tempfile.TemporaryDirectory() as tmp:
    files, kb = write_data(tmp, args.num_images, args.non_plain_fraction)
    vocab = os.path.join(tmp, "shards", "vocab.txt")
    print(f"host: {host_info.describe()}")
    print(f"{args.num_images} JPEGs of 500x375, mean {kb:.0f} KB; DeCLIP views at 224px; "
          f"{args.non_plain_fraction:.0%} of captions not plain ASCII; {os.cpu_count()} CPU cores here.")
    print(f"| tokenizer | threads | images/s | images/s per thread | Python share (GIL probe) | "
          f"Python us/image | cores for {OPEN_CLIP_A100_IMAGES_PER_S} img/s | "
          f"cores for {3 * OPEN_CLIP_A100_IMAGES_PER_S} img/s |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for name in names:
      for threads in [int(t) for t in args.threads.split(",")]:
        row = benchmark(files, vocab, name, args.merges, threads, args.batches, args.batch_size, probe,
                        probe_alone)
        rows.append(row)
        per = row["images_per_s"] / threads
        print(f"| {name} | {threads} | {row['images_per_s']:.0f} | {per:.0f} | {row['python_share']:.1%} | "
              f"{row['python_us_per_image']:.0f} | {OPEN_CLIP_A100_IMAGES_PER_S / per:.0f} | "
              f"{3 * OPEN_CLIP_A100_IMAGES_PER_S / per:.0f} |", flush=True)
  probe.stop()
  print(json.dumps(rows))


if __name__ == "__main__":
  main()
