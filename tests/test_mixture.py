"""A weighted mixture of TFRecord shards and a TFDS split: proportions, summed bad-record counts, resume."""

import numpy as np
import pytest

from declip_jax import config as config_lib
from declip_jax.data import mixture, record_stream, sources, tokenizers
from tests import pipeline_checks
from tests.test_tfds_source import data_dir, tfds_config  # noqa: F401  pylint: disable=unused-import
from tests.test_tfrecord_source import shards  # noqa: F401  pylint: disable=unused-import


def mixture_config(shards, data_dir):  # pylint: disable=redefined-outer-name
  c = tfds_config(data_dir)
  c.data.source = "mixture"
  c.data.mixture = (f"3:tfrecord:{shards}/*.tfrecord", "1:tfds:declip_test_captions/train")
  (data_dir / "mixed_vocab.txt").write_text((shards / "vocab.txt").read_text() + "square\ncircle\n")
  c.data.vocab_path = str(data_dir / "mixed_vocab.txt")
  c.model.text.vocab_size = 80
  c.data.max_caption_chars = 200
  return c


def test_mixture_proportions_counts_and_resume(shards, data_dir):  # pylint: disable=redefined-outer-name
  config = mixture_config(shards, data_dir)
  config_lib.validate(config)
  tokenizer = tokenizers.build(config)
  batches = pipeline_checks.assert_resumes_batch_for_batch(config, tokenizer, consumed=6, compared=2)
  counts = np.stack([b["bad_records"] for b in batches]).reshape(-1, len(record_stream.BAD_RECORD_COUNTERS))
  assert (np.diff(counts, axis=0) >= 0).all()  # Summed over sources, still cumulative.
  streams = []
  for _, source, location in sources.training_entries(config):
    stream = source.stream(location, config.data, config.train.seed)
    streams.append((stream.files, stream.parse))
  assert len(streams) == 2


def test_mixture_choices_follow_the_weights():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  counters = len(record_stream.BAD_RECORD_COUNTERS)
  a = tf.data.Dataset.range(10**9).map(lambda i: {"image": tf.zeros([1, 1, 3], tf.uint8), "caption": "a",
                                                   "bad_records": tf.zeros([counters], tf.int64)})
  b = a.map(lambda e: {**e, "caption": "b"})
  mixed = mixture.mix([a, b], [3.0, 1.0], seed=0).take(4000)
  share = np.mean([e["caption"] == b"a" for e in mixed.as_numpy_iterator()])
  assert abs(share - 0.75) < 0.03


@pytest.mark.parametrize("entry", ["tfrecord:/x/*.tfrecord", "0:tfrecord:/x", "1:tfds:coco_captions", "1:s3:x"])
def test_malformed_mixture_entries_are_named(entry):
  config = config_lib.base_config()
  config.data.source = "mixture"
  config.data.mixture = (entry,)
  config.data.tokenizer = "word"
  with pytest.raises(config_lib.ConfigError, match="data.mixture entry"):
    config_lib.validate(config)
