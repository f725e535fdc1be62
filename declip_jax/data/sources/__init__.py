"""The data sources by kind, and everything the pipeline, the evaluations and the config ask of them
(docs/design.md §15).

A new kind of data is one module in this package (a `base.Source` subclass: its config keys, validation,
training stream, held-out split, evaluation data and start checks) and one line in SOURCES; nothing outside
`declip_jax/data/` switches on a kind. `data.source` names one kind, or "mixture": weighted entries of streamed
kinds in `data.mixture` (data/mixture.py interleaves them). Imports no TensorFlow (the config's data section uses it).
"""

import dataclasses
from typing import Optional

import ml_collections

from declip_jax.data.errors import DataSourceError
from declip_jax.data.sources import base, builtin, clip_benchmark, image_folder, tfds, tfrecord, webdataset

SOURCES = {source.kind: source for source in (
    builtin.Builtin(),
    tfrecord.TFRecord(),
    webdataset.Webdataset(),
    tfds.Tfds(),
    image_folder.ImageFolder(),
    clip_benchmark.ClipBenchmark(),
)}
MIXTURE = "mixture"


def get(kind: str, key: str = "data.source") -> base.Source:
  if kind not in SOURCES:
    raise DataSourceError(f"{key}: unknown data source {kind!r}; known: {', '.join(SOURCES)}.")
  return SOURCES[kind]


def add_config(data: ml_collections.ConfigDict) -> None:
  """Adds each source's keys to the config's `data` section as `data.<kind>`."""
  for kind, source in SOURCES.items():
    data[kind] = source.config()


@dataclasses.dataclass(frozen=True)
class SourceSpec:
  """One `data.mixture` entry, "WEIGHT:KIND:LOCATION"."""

  weight: float
  kind: str  # A streamed source's kind.
  target: str  # What it reads: glob(s), NAME/SPLIT, a caption file.


def streamed_kinds() -> tuple[str, ...]:
  return tuple(kind for kind, source in SOURCES.items() if source.streamed)


def parse_specs(entries) -> list[SourceSpec]:
  """Parses data.mixture entries.

  Raises:
    ValueError: naming the malformed entry.
  """
  forms = ", ".join(f"'WEIGHT:{kind}:LOCATION'" for kind in streamed_kinds())
  specs = []
  for entry in entries:
    parts = str(entry).split(":", 2)
    try:
      weight = float(parts[0])
    except ValueError:
      weight = -1.0
    if len(parts) != 3 or parts[1] not in streamed_kinds() or weight <= 0 or not parts[2]:
      raise ValueError(f"data.mixture entry {entry!r} is not one of {forms} with WEIGHT > 0.")
    try:
      SOURCES[parts[1]].check_location(parts[2], f"data.mixture entry {entry!r}:")
    except DataSourceError as e:
      raise ValueError(str(e)) from e
    specs.append(SourceSpec(weight, parts[1], parts[2]))
  return specs


def training_entries(config: ml_collections.ConfigDict) -> list[tuple[float, base.Source, str]]:
  """(weight, source, location) of what training reads: one entry, or the mixture's."""
  data = config.data
  if data.source == MIXTURE:
    return [(spec.weight, SOURCES[spec.kind], spec.target) for spec in parse_specs(data.mixture)]
  source = get(data.source)
  return [(1.0, source, source.training_location(data))]


def is_streamed(config: ml_collections.ConfigDict) -> bool:
  """Whether training reads a stream whose iterator position the checkpoint must keep (else: by position)."""
  return config.data.source == MIXTURE or get(config.data.source).streamed


def known_size(config: ml_collections.ConfigDict) -> Optional[int]:
  """The number of training pairs when known without reading the data (built-in data), else None."""
  return None if config.data.source == MIXTURE else get(config.data.source).known_size(config.data)


def synonyms(config: ml_collections.ConfigDict) -> Optional[dict]:
  """The training data's own EDA synonym table, if it has one."""
  return None if config.data.source == MIXTURE else get(config.data.source).synonyms()


def _training_sources(config: ml_collections.ConfigDict) -> list[base.Source]:
  """The sources a held-out split may come from: the training source, or for a mixture every streamed one."""
  if config.data.source == MIXTURE:
    return [SOURCES[kind] for kind in streamed_kinds()]
  return [get(config.data.source)]


def heldout(config: ml_collections.ConfigDict) -> Optional[base.HeldOut]:
  """The training data's held-out split for "heldout" retrieval, or None when the config names none."""
  return next(filter(None, (s.heldout(config.data) for s in _training_sources(config))), None)


def heldout_settings(config: ml_collections.ConfigDict) -> list[str]:
  """The config keys that would give the training data a held-out split (for messages)."""
  return [s.heldout_setting for s in _training_sources(config) if s.heldout_setting]


def parse_dataset(dataset: str, key: str) -> tuple[base.Source, str]:
  """(source, location) of an evaluation dataset string "KIND:LOCATION"."""
  kind, _, location = dataset.partition(":")
  if kind not in SOURCES or not location:
    raise DataSourceError(f"{key} {dataset!r}: use one of {', '.join(dataset_forms(True))} (KIND:LOCATION).")
  SOURCES[kind].check_location(location, key)
  return SOURCES[kind], location


def dataset_forms(retrieval: bool) -> tuple[str, ...]:
  """The prefixes an evaluation's dataset string may have ("heldout" only for retrieval)."""
  return tuple(f"{kind}:" for kind in SOURCES) + (("heldout",) if retrieval else ())


def split_of(dataset: str) -> Optional[str]:
  """The split an evaluation dataset string names ("test" of "builtin:test" and "tfds:cifar10/test"), or None."""
  kind, _, location = dataset.partition(":")
  return SOURCES[kind].split_name(location) if kind in SOURCES else None


def validate(config: ml_collections.ConfigDict, require: base.Require) -> None:
  """Checks the data keys that training reads (the training source's, or each mixture entry's)."""
  data = config.data
  require(data.source in SOURCES or data.source == MIXTURE,
          f"data.source must be one of {', '.join(repr(k) for k in (*SOURCES, MIXTURE))}, got {data.source!r}.")
  if data.source == MIXTURE:
    try:
      entries = parse_specs(data.mixture)
    except ValueError as e:
      require(False, str(e))
    require(len(entries) > 0, "data.source 'mixture' needs data.mixture entries.")
    for kind in dict.fromkeys(spec.kind for spec in entries):
      SOURCES[kind].validate(data, require, location_given=True)
  else:
    get(data.source).validate(data, require)
  if is_streamed(config):
    require(data.max_caption_chars > 0, "data.max_caption_chars must be positive.")
    require(data.max_image_pixels > 0, "data.max_image_pixels must be positive.")
    require(data.tokenizer != "word" or bool(data.vocab_path),
            f"data.source {data.source!r} with data.tokenizer 'word' needs data.vocab_path (one word per line; "
            "python -m declip_jax.data.write_tfrecords writes one with the shards).")
