"""webdataset tar shards (img2dataset's default output; LAION, DataComp, CC12M), read as they are.
Reading: `declip_jax/data/webdataset_source.py`."""

from typing import Optional

import ml_collections

from declip_jax.data.sources import base


def _samples(location: str, key: str, member: str):
  """The samples of the shards, in file order, that have an image and the `member` ("caption" / "label")."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from declip_jax.data import tfrecord_source, webdataset_source  # pylint: disable=g-import-not-at-top
  files = tfrecord_source.list_files(location, key)
  ds = tf.data.Dataset.from_tensor_slices(files).interleave(webdataset_source.read_shard, cycle_length=1)
  return ds.filter(lambda e: ~e["end_of_shard"] & ~e["missing_image"] & ~e[f"missing_{member}"])


class Webdataset(base.Source):
  kind = "webdataset"
  heldout_setting = "data.webdataset.eval_files"

  def config(self) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.files = ""  # Glob, or comma-separated globs (local paths or gs://).
    c.cycle_length = 4  # Shards read in turn by each process (each is held in memory whole).
    c.eval_files = ""  # Held-out shards for retrieval evaluation; empty: none.
    c.num_eval_examples = 5000
    return c

  def validate(self, data, require, location_given=False):
    if not location_given:
      require(bool(data.webdataset.files),
              "data.source 'webdataset' needs data.webdataset.files (a glob of .tar shards).")
    require(data.webdataset.cycle_length > 0, "data.webdataset.cycle_length must be positive.")

  def training_location(self, data):
    return data.webdataset.files

  def stream(self, location, data, seed):
    from declip_jax.data import tfrecord_source, webdataset_source  # pylint: disable=g-import-not-at-top
    files = tfrecord_source.list_files(location, "data.webdataset.files")
    webdataset_source.check_usable(files, data)
    return base.Stream(files, webdataset_source.parse, data.webdataset, webdataset_source.read_shard)

  def heldout(self, data) -> Optional[base.HeldOut]:
    w = data.webdataset
    return base.HeldOut(f"webdataset:{w.eval_files}", num_examples=w.num_eval_examples) if w.eval_files else None

  def labelled_images(self, location, spec, config, key):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from declip_jax.data import tfrecord_source  # pylint: disable=g-import-not-at-top
    return base.EvalRecords(_samples(location, f"{key}.dataset", "label"), lambda e: {
        "image": tfrecord_source.decode_image(e["image"]),
        "label": tf.strings.to_number(tf.strings.strip(e["label"]), tf.int32)})

  def captioned_images(self, location, spec, config, key, heldout=None):
    from declip_jax.data import tfrecord_source  # pylint: disable=g-import-not-at-top
    return base.EvalRecords(_samples(location, f"{key}.dataset", "caption"), lambda e: {
        "image": tfrecord_source.decode_image(e["image"]), "captions": e["caption"]})
