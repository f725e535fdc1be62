"""Writes a dataset in CLIP_benchmark's layout (`declip_jax/data/sources/clip_benchmark.py`), from any evaluation
dataset the data sources read: the built-in data, a TFDS split, TFRecord or webdataset shards, an image folder.

  python -m declip_jax.benchmark.make_tars --dataset=tfds:cifar10/test --output=DIR/cifar10/test
  python -m declip_jax.benchmark.make_tars --config=configs/demo.py --dataset=builtin:test --label_key=shape \\
      --templates=builtin_shape --output=DIR/builtin_shape/test
  python -m declip_jax.benchmark.make_tars --config=configs/demo.py --dataset=builtin:test --kind=retrieval \\
      --output=DIR/builtin_retrieval/test

--output is the split's directory (`<root>/<task>/<split>`); the task's files (classnames.txt,
zeroshot_classification_templates.txt, dataset_type.txt) go in its parent. Images are written as PNG of the
pixels the source decodes, so that every reader of the tars (this suite, CLIP_benchmark with PIL) sees the same
pixels; a label is `KEY.cls`, captions `KEY.txt` one per line. Undecodable images are skipped and counted.
"""

import io
import sys
import tarfile

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "A config file (the built-in data's settings and image "
                                          "size; data.tfds.data_dir); default: the base config.")
_DATASET = flags.DEFINE_string("dataset", None, "An evaluation dataset string: builtin:SPLIT, tfds:NAME/SPLIT, "
                               "tfrecord:GLOB, webdataset:GLOB, image_folder:FILE.")
_KIND = flags.DEFINE_enum("kind", "zero_shot", ["zero_shot", "retrieval"], "Classification (labels) or retrieval "
                          "(captions).")
_LABEL_KEY = flags.DEFINE_string("label_key", "", "The label feature (built-in data: the attribute).")
_CLASS_NAMES_FILE = flags.DEFINE_string("class_names_file", "", "Class names, one per line, if the data has none.")
_TEMPLATES = flags.DEFINE_string("templates", "", "A template set of declip_jax/templates.py to write as the "
                                 "task's zero-shot templates; empty: none (the suite then uses CLIP_benchmark's).")
_OUTPUT = flags.DEFINE_string("output", None, "The split's directory: <root>/<task>/<split>.")
_SHARD_SIZE = flags.DEFINE_integer("shard_size", 1000, "Samples per tar.")
_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", 0, "The first this many examples; 0: all.")
flags.mark_flags_as_required(["dataset", "output"])


def write(records, output: str, kind: str, shard_size: int, num_examples: int = 0) -> tuple[int, int, int]:
  """Writes the decoded records as tars; returns (samples written, shards, records skipped)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top
  split = epath.Path(output)
  split.mkdir(parents=True, exist_ok=True)
  ds = records.records.take(num_examples) if num_examples > 0 else records.records

  def decoded(index, record):  # enumerate() keeps a record of several components one argument.
    del index
    e = records.decode(record)
    return {"png": tf.io.encode_png(e["image"]), **({"label": e["label"]} if kind == "zero_shot"
                                                    else {"captions": tf.reshape(e["captions"], [-1])})}

  written, tar = 0, None
  elements = ds.enumerate().map(decoded).apply(tf.data.experimental.ignore_errors(log_warning=False))
  for element in elements.as_numpy_iterator():
    text = (str(int(element["label"])) if kind == "zero_shot"
            else "\n".join(" ".join(c.decode().split()) for c in element["captions"] if c.strip()))
    if not text:
      continue  # No caption left: skipped (and counted).
    if written % shard_size == 0:
      if tar is not None:
        tar.close()
      tar = tarfile.open(split / f"{written // shard_size}.tar", "w", format=tarfile.PAX_FORMAT)
    key = f"{written:08d}"
    for name, data in ((f"{key}.png", element["png"]), (f"{key}.{'cls' if kind == 'zero_shot' else 'txt'}",
                                                        text.encode())):
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
    written += 1
  if tar is not None:
    tar.close()
  shards = -(-written // shard_size)
  (split / "nshards.txt").write_text(f"{shards}\n")
  total = int(ds.cardinality())
  if total < 0:  # Unknown (a stream of files): count the records, without decoding them.
    total = int(ds.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))
  return written, shards, total - written


def main(argv):
  if len(argv) > 1:
    print(f"error: unexpected arguments {argv[1:]}", file=sys.stderr)
    return 2
  from etils import epath  # pylint: disable=g-import-not-at-top
  from declip_jax import config as config_lib, templates  # pylint: disable=g-import-not-at-top
  from declip_jax.data import sources  # pylint: disable=g-import-not-at-top
  from declip_jax.data.errors import DataSourceError  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value or config_lib.base_config()
  spec = config_lib.eval_spec(_KIND.value, _DATASET.value, label_key=_LABEL_KEY.value,
                              class_names_file=_CLASS_NAMES_FILE.value)
  task = epath.Path(_OUTPUT.value.rstrip("/")).parent
  try:
    source, location = sources.parse_dataset(_DATASET.value, "--dataset")
    if _KIND.value == "zero_shot":
      records = source.labelled_images(location, spec, config, "--dataset")
      names = (tuple(line.strip() for line in epath.Path(_CLASS_NAMES_FILE.value).read_text().splitlines()
                     if line.strip()) if _CLASS_NAMES_FILE.value else records.class_names)
      if not names:
        raise DataSourceError(f"{_DATASET.value} has no class names: pass --class_names_file.")
    else:
      records, names = source.captioned_images(location, spec, config, "--dataset"), None
    written, shards, skipped = write(records, _OUTPUT.value, _KIND.value, _SHARD_SIZE.value, _NUM_EXAMPLES.value)
  except (DataSourceError, OSError, KeyError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  task.mkdir(parents=True, exist_ok=True)
  (task / "dataset_type.txt").write_text("classification\n" if _KIND.value == "zero_shot" else "retrieval\n")
  if names:
    (task / "classnames.txt").write_text("".join(f"{n}\n" for n in names))
  if _TEMPLATES.value:
    (task / "zeroshot_classification_templates.txt").write_text(
        "".join(t.replace("{}", "{c}") + "\n" for t in templates.get(_TEMPLATES.value)))
  print(f"wrote {written} samples in {shards} tars to {_OUTPUT.value}" + (f"; {len(names)} class names" if names
                                                                          else "")
        + (f"; {skipped} records skipped (undecodable images or no caption)" if skipped else ""))
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
