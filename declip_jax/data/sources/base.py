"""What a data source is: the one interface every kind of image-caption data implements (docs/design.md §15).

A source module in this package declares, in one place, everything about its kind of data: its name (what
`data.source` says, and the prefix of evaluation dataset strings "KIND:LOCATION"), its config keys
(`data.<kind>`) and their validation, how it is read for training (a checkpointable stream of records and their
parser, or examples drawn by position), its held-out split for retrieval, how it gives labelled and captioned
images to evaluations, and the start-up checks of its files and features. Source modules import no TensorFlow
when imported (the config's data section reads their keys): their reading code imports it when it runs.
"""

import dataclasses
from typing import Any, Callable, Optional

import ml_collections

from declip_jax.data.errors import DataSourceError

Require = Callable[[bool, str], None]  # config._require: raises ConfigError with the message when False.


@dataclasses.dataclass(frozen=True)
class Stream:
  """A source's training records, for `record_stream.examples`.

  Attributes:
    files: what `record_stream.file_order` orders per epoch and splits between processes (file names, or any
      names `read_file` understands).
    parse: (record index, record) -> (image bytes, caption bytes[, {flag: bool}]) (see record_stream.examples).
    read: `cycle_length` (files read in turn) and, for TFRecord files, `read_buffer_bytes`.
    read_file: name -> dataset of its records; None: the names are TFRecord files.
  """

  files: list[str]
  parse: Callable
  read: ml_collections.ConfigDict
  read_file: Optional[Callable] = None


@dataclasses.dataclass(frozen=True)
class EvalRecords:
  """An evaluation dataset's records, undecoded, and how to decode one.

  Attributes:
    records: tf.data.Dataset of records in the dataset's order (this process's slice is taken before decoding).
    decode: record -> {"image": [H, W, 3] uint8, "label": int32} (labelled images) or {"image", "captions": [n]
      string} (captioned images); may raise on a bad record, which is then skipped.
    class_names: the names of the labels when the data has them (labelled images), else None.
  """

  records: Any
  decode: Callable
  class_names: Optional[tuple[str, ...]] = None


@dataclasses.dataclass(frozen=True)
class HeldOut:
  """The training data's held-out split, for "heldout" retrieval: an evaluation dataset string read with the
  training data's feature names (and the config keys that name them, for messages), and how many examples."""

  dataset: str
  image_key: str = ""
  caption_key: str = ""
  num_examples: int = 0
  key_settings: tuple[str, str] = ("", "")


class Source:
  """One kind of data. Subclasses set `kind` and override what their data supports."""

  kind: str = ""
  # Training examples come as a stream of records whose position the checkpoint stores (False: drawn by
  # position from data the source holds in memory: `examples_by_index`).
  streamed: bool = True
  # The config key that gives the held-out split (for messages), if the source has one.
  heldout_setting: str = ""

  def config(self) -> ml_collections.ConfigDict:
    """The defaults of `data.<kind>`."""
    return ml_collections.ConfigDict()

  def validate(self, data: ml_collections.ConfigDict, require: Require) -> None:
    """Checks the keys training on this source needs (`data.source == kind` or a mixture entry)."""

  def training_location(self, data: ml_collections.ConfigDict) -> str:
    """What `data.source = kind` trains on (a glob, NAME/SPLIT, a file)."""
    raise NotImplementedError

  def stream(self, location: str, data: ml_collections.ConfigDict, seed: int) -> Stream:
    """The training records of `location`, after checking that they hold usable examples.

    Raises:
      DataSourceError: no such files, or nothing usable in the first records (the message says what is there).
    """
    raise NotImplementedError

  def examples_by_index(self, config: ml_collections.ConfigDict) -> tuple[int, Callable]:
    """Sources that are not `streamed`: (N, index -> {"image": uint8 [H, W, 3], "caption": string})."""
    raise NotImplementedError

  def known_size(self, data: ml_collections.ConfigDict) -> Optional[int]:
    """The number of training pairs when the source knows it without reading the data."""
    return None

  def synonyms(self) -> Optional[dict]:
    """EDA's synonym table for this data when it has its own (word -> alternatives)."""
    return None

  def heldout(self, data: ml_collections.ConfigDict) -> Optional[HeldOut]:
    """The held-out split the config names for this source, or None."""
    return None

  def check_location(self, location: str, key: str) -> None:
    """Raises DataSourceError when an evaluation dataset string's location has the wrong form."""
    if not location:
      raise DataSourceError(f"{key}: {self.kind}:LOCATION needs a location.")

  def split_name(self, location: str) -> Optional[str]:
    """The split an evaluation location names (e.g. "test"), or None (files)."""
    return None

  def labelled_images(self, location: str, spec: ml_collections.ConfigDict, config: ml_collections.ConfigDict,
                      key: str) -> EvalRecords:
    """Images with integer labels (`spec`: an `evals.<name>` entry; `key`: "evals.<name>" for messages)."""
    raise DataSourceError(f"{key}: {self.kind} data has no labels for classification.")

  def captioned_images(self, location: str, spec: ml_collections.ConfigDict, config: ml_collections.ConfigDict,
                       key: str, heldout: Optional[HeldOut] = None) -> EvalRecords:
    """Images with their captions (all of them); `heldout`: the training data's split is read (its feature names
    instead of the spec's)."""
    raise DataSourceError(f"{key}: {self.kind} data has no captions for retrieval.")

  def check_evaluation(self, location: str, spec: ml_collections.ConfigDict, config: ml_collections.ConfigDict,
                       key: str, heldout: Optional[HeldOut] = None) -> None:
    """Raises DataSourceError at start when the data lacks what the evaluation reads (beyond the generic check
    that it yields an example)."""
