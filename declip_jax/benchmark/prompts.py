"""The class names and zero-shot templates a benchmark task uses, as CLIP_benchmark chooses them: the task's own
files when its tars have them (`classnames.txt`, `zeroshot_classification_templates.txt`), else CLIP_benchmark's
shipped ones for the task (`data/`, looked up by the task's key and by its last part, e.g. `vtab/cifar100` then
`cifar100`), else the data's label names (TFDS) and ImageNet's templates."""

import functools
import json
from typing import Optional, Sequence

from etils import epath

DATA = epath.Path(__file__).parent / "data"
DEFAULT_TEMPLATES_OF = "imagenet1k"  # CLIP_benchmark's fallback template set.


@functools.cache
def _shipped(name: str) -> dict:
  return json.loads((DATA / name).read_text())


def _lookup(table: dict, key: str):
  for name in (key, key.rsplit("/", 1)[-1]):
    if name in table:
      return table[name]
  return None


def class_names(key: str, from_data: Sequence[str], data_has_own: bool) -> tuple[str, ...]:
  """The task's class names: the tars' own (`data_has_own`), else the shipped ones, else the data's labels'."""
  if data_has_own and from_data:
    return tuple(from_data)
  shipped = _lookup(_shipped("en_classnames.json"), key)
  return tuple(shipped) if shipped else tuple(from_data)


def templates(key: str, own: Optional[Sequence[str]] = None) -> tuple[str, ...]:
  """The task's templates with "{}" for the class name: its own, else the shipped ones for it, else ImageNet's."""
  if own:
    return tuple(own)
  table = _shipped("en_zeroshot_classification_templates.json")
  found = _lookup(table, key) or table[DEFAULT_TEMPLATES_OF]
  return tuple(t.replace("{c}", "{}") for t in found)
