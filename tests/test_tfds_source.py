"""A TFDS image-caption dataset, built locally from files this test writes: multi-caption records pick one caption
per visit, training resumes batch for batch, and retrieval counts every caption of each image."""

import io
import json

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from declip_jax import config as config_lib
from declip_jax.data import record_stream, tokenizers
from declip_jax.data.sources import tfds as tfds_source
from declip_jax.evaluation import datasets
from tests import pipeline_checks
from tests.tiny_config import tiny_config

NUM_IMAGES = {"train": 24, "val": 8}


class DeclipTestCaptions(tfds.core.GeneratorBasedBuilder):
  """coco_captions-like: an image and a Sequence of captions, from PNG files and a JSON file in manual_dir."""

  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = "The test writes the images and captions.json into manual_dir."

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3)),
        "captions": tfds.features.Sequence({"text": tfds.features.Text()})}))

  def _split_generators(self, dl_manager):
    return {split: self._generate_examples(dl_manager.manual_dir, split) for split in NUM_IMAGES}

  def _generate_examples(self, manual_dir, split):
    rows = json.loads((manual_dir / f"{split}.json").read_text())
    for i, row in enumerate(rows):
      yield i, {"image": str(manual_dir / row["image"]), "captions": [{"text": t} for t in row["captions"]]}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("tfds")
  manual = root / "manual"
  manual.mkdir()
  rng = np.random.default_rng(0)
  for split, n in NUM_IMAGES.items():
    rows = []
    for i in range(n):
      buffer = io.BytesIO()
      Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(buffer, "PNG")
      (manual / f"{split}{i}.png").write_bytes(buffer.getvalue())
      rows.append({"image": f"{split}{i}.png", "captions": [f"red circle {i}", f"green square {i}",
                                                             f"blue circle {i}"][: 1 + i % 3]})
    (manual / f"{split}.json").write_text(json.dumps(rows))
  builder = DeclipTestCaptions(data_dir=str(root / "data"))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  (root / "vocab.txt").write_text("red\ngreen\nblue\ncircle\nsquare\n")
  return root


def tfds_config(root):
  c = tiny_config()
  c.data.source = "tfds"
  c.data.tfds.name = "declip_test_captions"
  c.data.tfds.data_dir = str(root / "data")
  c.data.tfds.eval_split = "val"
  c.data.vocab_path = str(root / "vocab.txt")
  c.data.shuffle_window = 4
  c.data.tfrecord.cycle_length = 1
  c.evals = {"retrieval": config_lib.eval_spec("retrieval", "heldout")}  # On data.tfds.eval_split.
  return c


def test_each_visit_draws_one_of_the_captions(data_dir):
  config = tfds_config(data_dir)
  files, parse = tfds_source.split_files_and_parser(config.data.tfds, seed=0)
  ds = tf.data.TFRecordDataset(files).enumerate().map(parse)
  seen = {}
  for epoch in range(12):
    for image, caption in ds.map(lambda i, c: (tf.shape(tf.io.decode_png(i)), c)).as_numpy_iterator():
      number = int(caption.decode().split()[-1])
      seen.setdefault(number, set()).add(caption.decode())
    ds = tf.data.TFRecordDataset(files).enumerate(start=(epoch + 1) * 100).map(parse)
  assert sorted(seen) == list(range(24))
  assert all(len(captions) == 1 + i % 3 for i, captions in seen.items())  # Every caption drawn at some visit.


def test_training_batches_resume_and_retrieval_uses_every_caption(data_dir):
  config = tfds_config(data_dir)
  tokenizer = tokenizers.build(config)
  pipeline_checks.assert_resumes_batch_for_batch(config, tokenizer, consumed=1, compared=3)
  data = datasets.captioned_images(config.evals.retrieval, config, "retrieval")  # "heldout": data.tfds.eval_split.
  assert data.name == "tfds:declip_test_captions/val"
  rows = list(datasets.batches(data.dataset, 3, ("index", "captions")))
  counts = [int((row != b"").sum()) for batch in rows for row in batch["captions"]]
  assert sorted(counts) == sorted(1 + i % 3 for i in range(8))  # TFDS stores examples in its own order.
  assert [i for batch in rows for i in batch["index"]] == list(range(8))


def test_unknown_feature_path_is_named(data_dir):
  config = tfds_config(data_dir)
  config.data.tfds.caption_key = "caption"
  with pytest.raises(record_stream.DataSourceError, match="data.tfds.caption_key 'caption'"):
    tfds_source.split_files_and_parser(config.data.tfds, seed=0)
