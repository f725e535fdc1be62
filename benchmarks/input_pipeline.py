"""Input-pipeline throughput and its Python share: read + decode + two 224px MoCo-v2 views + MLM and EDA text
views + two tokenizations, per CPU core, on JPEGs this script writes (~500x375, natural-image-like sizes), from
TFRecord shards or the same samples in webdataset tars.

  python benchmarks/input_pipeline.py [--rows word,clip_bpe,clip_bpe:in_graph,clip_bpe:webdataset] \
      [--threads 1,2]

A row is TOKENIZER[:DECODE][:SOURCE]: `word` or `clip_bpe` (the recipe's, OpenAI's merges file from the open_clip
package by default; plain-ASCII captions in TF ops) or `clip_bpe_python` (the same ids, every caption through the
Python tokenizer in a `tf.numpy_function`, as it ran before); decode `skip` (the default: undecodable images
skipped and counted, the decode in a `tf.py_function`) or `in_graph` (data.skip_undecodable_images=False);
source `tfrecord` or `webdataset`. A fraction `--non_plain_fraction` of the captions carry an accent or an HTML
entity, as scraped alt-text does; those go to Python with any tokenizer.

The Python share is what limits scaling with cores (Python holds the GIL). Measured two ways: directly, the time
per image spent in the pipeline's Python functions (the decode's py_function body less the decode kernel, which
releases the GIL, and the tokenizer's numpy_function), as a fraction of one thread's time per image; and by a
GIL probe, a pure-Python counting thread beside the pipeline, as 1 - its rate beside / its rate alone (on a
machine with few cores this also counts CPU contention: compare with the `in_graph` rows, which run no Python).

Prints a table: row, threads, images/s, per thread, Python us/image, Python share, probe slowdown, and the cores
that feed one accelerator at open_clip's published ViT-B/32 rate (~850 images/s per A100) and at 3x that.
"""

import argparse
import importlib.util
import io
import json
import os
import sys
import tarfile
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top
from PIL import Image  # pylint: disable=g-import-not-at-top

from declip_jax import host_info  # pylint: disable=g-import-not-at-top
from declip_jax import config as config_lib  # pylint: disable=g-import-not-at-top
from declip_jax.data import pipeline, record_stream, tokenizers, write_tfrecords  # pylint: disable=g-import-not-at-top

OPEN_CLIP_A100_IMAGES_PER_S = 850
DECODE_IMAGE = tf.raw_ops.DecodeImage
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

  def wrap(self, fn, excluding=None):
    """fn, timed; less the time spent in the (GIL-releasing) op `excluding` when fn calls it eagerly."""
    inner = threading.local()

    def timed(*args, **kwargs):
      inner.excluded = 0.0
      start = time.perf_counter()
      try:
        return fn(*args, **kwargs)
      finally:
        with self._lock:
          self.seconds += time.perf_counter() - start - inner.excluded

    if excluding is not None:

      def timed_op(*args, **kwargs):
        start = time.perf_counter()
        try:
          return excluding(*args, **kwargs)
        finally:
          if tf.executing_eagerly() and hasattr(inner, "excluded"):
            inner.excluded += time.perf_counter() - start

      tf.raw_ops.DecodeImage = timed_op  # Seen by the py_function body, which looks it up at call time.
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


def write_webdataset(directory: str, tfrecords: str) -> str:
  """The TFRecord shards' samples as webdataset tars (one per shard, img2dataset's member names); their glob."""
  out = os.path.join(directory, "wds")
  os.makedirs(out)
  for n, path in enumerate(sorted(tf.io.gfile.glob(tfrecords))):
    with tarfile.open(os.path.join(out, f"{n:05d}.tar"), "w") as tar:
      for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        feature = tf.train.Example.FromString(record).features.feature
        key = feature["key"].bytes_list.value[0].decode()
        for ext in ("jpg", "txt"):
          data = feature[ext].bytes_list.value[0]
          info = tarfile.TarInfo(f"{key}.{ext}")
          info.size = len(data)
          tar.addfile(info, io.BytesIO(data))
  return os.path.join(out, "*.tar")


def build_iterator(row: str, files: dict, vocab: str, merges: str, threads: int, batch_size: int):
  """An iterator of train_dataset for a row (see the module docstring), after two warm-up batches, and the
  PythonTime its Python functions add to."""
  tokenizer_name, *options = row.split(":")
  decode = "in_graph" if "in_graph" in options else "skip"
  source = "webdataset" if "webdataset" in options else "tfrecord"
  c = config_lib.base_config()
  c.data.source = source
  c.data.tfrecord.files, c.data.webdataset.files = files["tfrecord"], files["webdataset"]
  c.data.skip_undecodable_images = decode == "skip"
  c.data.tokenizer = "word" if tokenizer_name == "word" else "clip_bpe"
  c.data.vocab_path = vocab if tokenizer_name == "word" else merges
  c.data.shuffle_window = 256
  c.train.batch_size = batch_size
  tokenizer = tokenizers.build(c)
  python_time = PythonTime()
  if tokenizer_name == "clip_bpe_python":
    numpy_tokenize = python_time.wrap(lambda t: tokenizer.tokenize_numpy(list(t)))

    def all_in_python(texts):
      ids = tf.numpy_function(numpy_tokenize, [tf.reshape(texts, [-1])], tf.int32, stateful=False)
      return tf.reshape(ids, [-1, tokenizer.context_length])

    tokenizer.tokenize = all_in_python
  else:
    tokenizer.tokenize_numpy = python_time.wrap(tokenizer.tokenize_numpy)
  threading_options = tf.data.Options()
  threading_options.threading.private_threadpool_size = threads
  threading_options.threading.max_intra_op_parallelism = 1
  with record_stream.python_decode_wrapped(lambda decode: python_time.wrap(decode, excluding=DECODE_IMAGE)):
    iterator = iter(pipeline.train_dataset(c, tokenizer).with_options(threading_options))
  for _ in range(2):
    next(iterator)
  return iterator, python_time


def benchmark(row: str, files: dict, vocab: str, merges: str, threads: int, batches: int, batch_size: int,
              probe: GilProbe, probe_alone: float) -> dict:
  """Images/s of train_dataset on a private pool of `threads` threads, then the GIL probe's slowdown over as
  many batches again."""
  iterator, python_time = build_iterator(row, files, vocab, merges, threads, batch_size)
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
  tf.raw_ops.DecodeImage = DECODE_IMAGE  # Unwrapped (PythonTime.wrap's timing of it).
  rate = images / wall
  return {"row": row, "threads": threads, "images_per_s": rate, "python_us_per_image": python_us,
          "python_share": python_us * 1e-6 * rate / threads, "probe_slowdown": max(0.0, 1 - beside / probe_alone)}


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--num_images", type=int, default=512)
  parser.add_argument("--rows", default="word,clip_bpe_python,clip_bpe,clip_bpe:in_graph,clip_bpe:webdataset")
  parser.add_argument("--merges", default=open_clip_merges(), help="CLIP merges file (default: open_clip's)")
  parser.add_argument("--non_plain_fraction", type=float, default=0.05)
  parser.add_argument("--threads", default="1,2")
  parser.add_argument("--batches", type=int, default=10)
  parser.add_argument("--batch_size", type=int, default=32)
  args = parser.parse_args()
  tf.config.set_visible_devices([], "GPU")
  rows = args.rows.split(",")
  if any(not r.startswith("word") for r in rows) and not args.merges:
    parser.error("clip_bpe needs OpenAI's merges file: pip install -r requirements-interop.txt, or --merges=PATH")
  probe = GilProbe()
  probe.start()
  probe_alone = probe.rate_over(lambda: time.sleep(2.0))
  with tempfile.TemporaryDirectory() as tmp:
    tfrecords, kb = write_data(tmp, args.num_images, args.non_plain_fraction)
    files = {"tfrecord": tfrecords, "webdataset": write_webdataset(tmp, tfrecords)}
    vocab = os.path.join(tmp, "shards", "vocab.txt")
    print(f"host: {host_info.describe()}")
    print(f"{args.num_images} JPEGs of 500x375, mean {kb:.0f} KB; DeCLIP views at 224px; "
          f"{args.non_plain_fraction:.0%} of captions not plain ASCII; {os.cpu_count()} CPU cores here.")
    print(f"| row | threads | images/s | images/s per thread | Python us/image | Python share | GIL probe slowdown "
          f"| cores for {OPEN_CLIP_A100_IMAGES_PER_S} img/s | cores for {3 * OPEN_CLIP_A100_IMAGES_PER_S} img/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    results = []
    for row in rows:
      for threads in [int(t) for t in args.threads.split(",")]:
        r = benchmark(row, files, vocab, args.merges, threads, args.batches, args.batch_size, probe, probe_alone)
        results.append(r)
        per = r["images_per_s"] / threads
        print(f"| {row} | {threads} | {r['images_per_s']:.0f} | {per:.0f} | {r['python_us_per_image']:.0f} | "
              f"{r['python_share']:.1%} | {r['probe_slowdown']:.1%} | {OPEN_CLIP_A100_IMAGES_PER_S / per:.1f} | "
              f"{3 * OPEN_CLIP_A100_IMAGES_PER_S / per:.1f} |", flush=True)
  probe.stop()
  print(json.dumps(results))


if __name__ == "__main__":
  main()
