"""A folder of images with a CSV of captions as a data source (declip_jax/data/sources/image_folder.py): bad rows
skipped and counted exactly, every usable row once per epoch, disjoint units per process, resume batch for batch,
a mixture entry, evaluation data and the start checks."""

import csv

import numpy as np
import pytest

from declip_jax import config as config_lib
from declip_jax.data import errors, record_stream, sources, tokenizers
from declip_jax.evaluation import datasets
from tests import pipeline_checks
from tests.test_tfrecord_source import COLOURS, FORMATS, _image_bytes
from tests.tiny_config import tiny_config


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
  """photos/captions.csv: 40 good rows (images in every format, some in a subfolder), then a row whose image
  file is missing, one with an undecodable image, one with an empty caption; and labels.csv (integer labels)."""
  root = tmp_path_factory.mktemp("photos")
  (root / "sub").mkdir()
  rng = np.random.default_rng(0)
  rows, words = [], set()
  for i in range(40):
    name = f"{'sub/' if i % 3 == 0 else ''}{i:03d}.img"
    (root / name).write_bytes(_image_bytes(FORMATS[i % len(FORMATS)], rng))
    caption = f"a {COLOURS[i % 4]} photo number {i}"
    words |= set(caption.split())
    rows.append((name, caption, i % 4))
  (root / "broken.jpg").write_bytes(b"not an image")
  (root / "quiet.jpg").write_bytes(_image_bytes("jpeg", rng))
  rows += [("gone.jpg", "missing image", 0), ("broken.jpg", "undecodable", 0), ("quiet.jpg", "  ", 0)]
  for file, columns in (("captions.csv", ("image", "caption")), ("labels.csv", ("image", "label"))):
    with open(root / file, "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(columns)
      writer.writerows((name, caption if columns[1] == "caption" else label) for name, caption, label in rows)
  (root / "vocab.txt").write_text("\n".join(sorted(words | {"missing", "image", "undecodable"})) + "\n")
  return root


BAD = {"gone.jpg": "skipped_sample_without_image", "broken.jpg": "skipped_undecodable_image",
       "quiet.jpg": "skipped_empty_caption"}


def folder_config(root, source: str = "image_folder"):
  c = tiny_config()
  c.data.source = source
  c.data.image_folder.captions = str(root / "captions.csv")
  c.data.image_folder.rows_per_shard = 8
  c.data.image_folder.cycle_length = 2
  c.data.vocab_path = str(root / "vocab.txt")
  c.data.shuffle_window = 8
  c.model.text.vocab_size = 70
  c.evals = {}
  return c


def _examples(config, process_index=0, process_count=1):
  stream = sources.get("image_folder").stream(config.data.image_folder.captions, config.data, config.train.seed)
  return stream, record_stream.examples(stream.files, stream.parse, stream.read, config.data, config.train.seed,
                                          process_index, process_count, stream.read_file)


def test_bad_rows_are_skipped_and_counted_exactly(photos):
  """Against a reference that walks the same raw row order and classifies each row by its image file."""
  config = folder_config(photos)
  config_lib.validate(config)
  stream, examples = _examples(config)
  assert len(stream.files) == 6  # 43 rows in units of 8.
  raw = record_stream.raw_records(stream.files, stream.read, config.train.seed, config.data.shuffle_window, 0, 1,
                                    stream.read_file)
  names = ((row["path"].decode().rsplit("/", 1)[-1], {}) for row in raw.as_numpy_iterator())
  expected_names, expected_counts = pipeline_checks.expected_bad_record_counts(names, BAD, 100)
  final = dict(zip(record_stream.BAD_RECORD_COUNTERS, expected_counts[-1]))
  assert final["skipped_sample_without_image"] >= 2 and final["skipped_undecodable_image"] >= 2
  got = list(examples.take(100).as_numpy_iterator())
  np.testing.assert_array_equal([e["bad_records"] for e in got], expected_counts)
  for name, e in zip(expected_names, got):
    i = int(name.split(".")[0])
    assert e["caption"].decode() == f"a {COLOURS[i % 4]} photo number {i}" and e["image"].shape[2] == 3


def test_one_epoch_holds_every_usable_row_once_and_processes_read_disjoint_units(photos):
  config = folder_config(photos)
  config.data.shuffle_window, config.data.image_folder.cycle_length = 1, 1
  captions = sorted(e["caption"].decode() for e in _examples(config)[1].take(40).as_numpy_iterator())
  assert captions == sorted(f"a {COLOURS[i % 4]} photo number {i}" for i in range(40))
  config.data.image_folder.rows_per_shard = 10  # 5 units: 4 of 10 good rows, then the 3 bad ones.
  per_process = [{e["caption"] for e in _examples(config, p, 2)[1].take(10).as_numpy_iterator()} for p in range(2)]
  assert all(len(s) == 10 for s in per_process) and not per_process[0] & per_process[1]


def test_train_batches_resume_batch_for_batch_alone_and_in_a_mixture(photos):
  config = folder_config(photos)
  batches = pipeline_checks.assert_resumes_batch_for_batch(config, tokenizers.build(config), 4, 2)
  assert batches[0]["img1"].shape == (16, 16, 16, 3)
  config.data.source = "mixture"
  config.data.mixture = (f"2:image_folder:{photos}/captions.csv", f"1:image_folder:{photos}/captions.csv")
  config_lib.validate(config)
  assert [(w, s.kind) for w, s, _ in sources.training_entries(config)] == [(2.0, "image_folder"),
                                                                           (1.0, "image_folder")]
  pipeline_checks.assert_resumes_batch_for_batch(config, tokenizers.build(config), 3, 2)


def test_evaluation_data_from_a_caption_file(photos):
  config = folder_config(photos)
  retrieval = config_lib.eval_spec("retrieval", f"image_folder:{photos}/captions.csv")
  datasets.check_available(retrieval, config, "r")
  captioned = list(datasets.captioned_images(retrieval, config, "r").dataset.as_numpy_iterator())
  assert len(captioned) == 40 and [e["index"] for e in captioned] == list(range(40))  # Missing, broken, empty: out.
  assert captioned[5]["captions"].tolist() == [b"a green photo number 5"]
  probe = config_lib.eval_spec("linear_probe", f"image_folder:{photos}/labels.csv",
                               train_dataset=f"image_folder:{photos}/labels.csv")
  datasets.check_available(probe, config, "p")
  labelled = datasets.labelled_images(probe, config, "p")
  labels = [e["label"] for e in labelled.dataset.as_numpy_iterator()]
  assert labels == [i % 4 for i in range(40)] + [0] and labelled.class_names == ()  # quiet.jpg has a label.
  config.data.image_folder.eval_captions = str(photos / "captions.csv")
  heldout = datasets.captioned_images(config_lib.eval_spec("retrieval", "heldout"), config, "h")
  assert heldout.name == f"image_folder:{photos}/captions.csv" and len(list(heldout.dataset)) == 40
  with pytest.raises(errors.DataSourceError, match="zero-shot classification on image_folder data needs"):
    datasets.labelled_images(config_lib.eval_spec("zero_shot", f"image_folder:{photos}/labels.csv"), config, "z")


def test_start_checks_name_the_problem(photos, tmp_path):
  config = folder_config(photos)
  folder = sources.get("image_folder")
  with pytest.raises(errors.DataSourceError, match="data.image_folder.captions: no caption file"):
    folder.stream(str(tmp_path / "nothing.csv"), config.data, 0)
  (tmp_path / "wrong.csv").write_text("file,text\na.jpg,hello\n")
  with pytest.raises(errors.DataSourceError, match="cannot be read with columns 'image' and 'caption'"):
    folder.stream(str(tmp_path / "wrong.csv"), config.data, 0)
  (tmp_path / "elsewhere.csv").write_text("image,caption\na.jpg,hello\nb.jpg,world\n")
  with pytest.raises(errors.DataSourceError, match=r"none of the first 2 rows .* \(0 of their image files exist"):
    folder.stream(str(tmp_path / "elsewhere.csv"), config.data, 0)
  config.data.image_folder.captions = ""
  with pytest.raises(config_lib.ConfigError, match="data.source 'image_folder' needs data.image_folder.captions"):
    config_lib.validate(config)
