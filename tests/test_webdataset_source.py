"""webdataset tar shards read as img2dataset writes them: members and names (ustar, GNU and pax long names),
truncated and corrupt shards, bad samples skipped and counted exactly, per-process files, resume batch for batch,
a mixture entry, and a training run killed and resumed to the same losses."""

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest
import tensorflow as tf

from declip_jax import config as config_lib, logs
from declip_jax.data import record_stream, tokenizers
from declip_jax.data.sources import webdataset as webdataset_source
from tests import pipeline_checks
from tests.conftest import REPO
from tests.test_tfrecord_source import COLOURS, FORMATS, _image_bytes, decompression_bomb
from tests.tiny_config import tiny_config


def write_tar(path, members, tar_format=tarfile.PAX_FORMAT):
  """members: (name, bytes) in order."""
  with tarfile.open(path, "w", format=tar_format) as tar:
    for name, data in members:
      info = tarfile.TarInfo(name)
      info.size, info.mtime = len(data), 1_700_000_000
      tar.addfile(info, io.BytesIO(data))


def sample_members(key: str, image: bytes, caption: bytes, image_ext: str = "jpg"):
  return [(f"{key}.{image_ext}", image), (f"{key}.txt", caption), (f"{key}.json", json.dumps({"key": key}).encode())]


@pytest.mark.parametrize("tar_format", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_members_match_python_tarfile(tmp_path, tar_format):
  long_dir = "shard_dir/" + "d" * 90 + "/"  # ustar: prefix field; GNU: long-name member; pax: path record.
  members = [(f"{long_dir}{i:09d}.{ext}", os.urandom(int(n))) for i, n in enumerate([0, 1, 511, 512, 513, 3000])
             for ext in ("jpg", "txt")]
  write_tar(tmp_path / "a.tar", members, tar_format)
  names, offsets, sizes, intact = webdataset_source.members(tf.io.read_file(str(tmp_path / "a.tar")))
  raw = (tmp_path / "a.tar").read_bytes()
  assert [n.decode() for n in names.numpy()] == [name for name, _ in members] and bool(intact)
  assert [raw[o:o + s] for o, s in zip(offsets.numpy(), sizes.numpy())] == [data for _, data in members]


def test_truncated_and_corrupt_shards_keep_their_complete_members(tmp_path):
  members = [(f"{i:05d}.txt", b"x" * 700) for i in range(4)]
  write_tar(tmp_path / "a.tar", members)
  raw = (tmp_path / "a.tar").read_bytes()
  cut_in_data = raw[: 512 * 2 + 512 + 100 + 512 * 2]  # (pax-free) header, 2 data blocks, header, part of data.
  corrupt = bytearray(raw)
  corrupt[512 * 3 + 10] ^= 0xFF  # A byte of the second header's name: its checksum no longer matches.
  for data, complete in [(raw, 4), (cut_in_data, 1), (raw[: 512 * 3 + 200], 1), (bytes(corrupt), 1), (b"", 0),
                         (b"not a tar file" * 100, 0)]:
    names, _, _, intact = webdataset_source.members(tf.constant(data))
    assert len(names) == complete and bool(intact) == (data == raw or data == b""), len(data)


@pytest.fixture(scope="module")
def wds_shards(tmp_path_factory):
  """3 shards of 20 good samples (every image format, as .jpg/.png/.webp members), and a fourth shard of bad
  samples, cut short inside its last member: an undecodable image, an empty caption, a sample without a caption,
  one without an image, invalid UTF-8, a long caption, a decompression bomb, then a good sample whose caption the
  cut removes."""
  root = tmp_path_factory.mktemp("wds")
  rng = np.random.default_rng(0)
  words = set()
  for shard in range(3):
    members = []
    for j in range(20):
      i = shard * 20 + j
      caption = f"a {COLOURS[i % 4]} photo number {i}"
      words |= set(caption.split())
      members += sample_members(f"{i:09d}", _image_bytes(FORMATS[i % len(FORMATS)], rng), caption.encode(),
                                image_ext=("jpg", "png", "webp")[i % 3])
    write_tar(root / f"{shard:05d}.tar", members)
  good = _image_bytes("jpeg", rng)
  bad = (sample_members("bad0", b"not an image", b"undecodable") + sample_members("bad1", good, b"  ")
         + [("bad2.jpg", good), ("bad2.json", b"{}")] + [("bad3.txt", b"no image"), ("bad3.json", b"{}")]
         + sample_members("bad4", good, b"caf\xe9 bad utf8") + sample_members("bad5", good, b"long " * 400)
         + sample_members("bad6", decompression_bomb("png", rng), b"bomb", "png")
         + [("bad7.jpg", good), ("bad7.txt", b"cut off")])
  write_tar(root / "00003.tar", bad)
  raw = (root / "00003.tar").read_bytes()
  (root / "00003.tar").write_bytes(raw[: raw.rindex(b"cut off") - 1])
  (root / "vocab.txt").write_text("\n".join(sorted(words | {"caf", "bad", "utf8", "long", "bomb"})) + "\n")
  return root


BAD_KEYS = {"bad0": "skipped_undecodable_image", "bad1": "skipped_empty_caption",
            "bad2": "skipped_sample_without_caption", "bad3": "skipped_sample_without_image",
            "bad4": "repaired_invalid_utf8_caption", "bad5": "truncated_long_caption",
            "bad6": "skipped_oversized_image", "bad7": "skipped_sample_without_caption"}


def wds_config(root) -> config_lib.ml_collections.ConfigDict:
  c = tiny_config()
  c.data.source = "webdataset"
  c.data.webdataset.files = str(root / "*.tar")
  c.data.webdataset.cycle_length = 2
  c.data.vocab_path = str(root / "vocab.txt")
  c.data.shuffle_window = 8
  c.data.max_caption_chars = 200
  c.model.text.vocab_size = 90
  c.evals = {}
  return c


def _examples(config, process_index=0, process_count=1):
  files = record_stream.list_files(config.data.webdataset.files)
  return record_stream.examples(files, webdataset_source.parse, config.data.webdataset, config.data,
                                  config.train.seed, process_index, process_count, webdataset_source.read_shard)


def test_bad_samples_are_skipped_or_repaired_and_counted_exactly(wds_shards):
  """Against a reference that walks the same raw sample order and classifies each sample by its key."""
  config = wds_config(wds_shards)
  config_lib.validate(config)
  files = record_stream.list_files(config.data.webdataset.files)
  raw = record_stream.raw_records(files, config.data.webdataset, config.train.seed, config.data.shuffle_window,
                                    0, 1, webdataset_source.read_shard)
  n = 200
  keys = ((None, {"truncated_shard": int(s["truncated_shard"])}) if s["end_of_shard"] else (s["key"].decode(), {})
          for s in raw.as_numpy_iterator())
  expected_keys, expected_counts = pipeline_checks.expected_bad_record_counts(keys, BAD_KEYS, n)
  final = dict(zip(record_stream.BAD_RECORD_COUNTERS, expected_counts[-1]))
  assert final["truncated_shard"] >= 2 and final["skipped_sample_without_caption"] >= 4
  got = list(_examples(config).take(n).as_numpy_iterator())
  np.testing.assert_array_equal([e["bad_records"] for e in got], expected_counts)
  for key, e in zip(expected_keys, got):
    caption = e["caption"].decode()
    if key == "bad4":
      assert caption == "caf\ufffd bad utf8"
    elif key == "bad5":
      assert caption.startswith("long") and len(caption) == config.data.max_caption_chars
    else:
      assert caption == f"a {COLOURS[int(key) % 4]} photo number {int(key)}"
    assert e["image"].ndim == 3 and e["image"].shape[2] == 3


def test_one_epoch_holds_every_usable_sample_once_and_processes_read_disjoint_files(wds_shards):
  config = wds_config(wds_shards)
  config.data.shuffle_window, config.data.webdataset.cycle_length = 1, 1
  captions = sorted(e["caption"].decode() for e in _examples(config).take(62).as_numpy_iterator())
  assert [c for c in captions if c.startswith("a ")] == sorted(f"a {COLOURS[i % 4]} photo number {i}"
                                                                for i in range(60))
  config.data.webdataset.files = str(wds_shards / "0000[012].tar")
  per_process = [{e["caption"] for e in _examples(config, p, 3).take(20).as_numpy_iterator()} for p in range(3)]
  assert all(len(s) == 20 for s in per_process) and len(set.union(*per_process)) == 60


def test_train_batches_resume_batch_for_batch(wds_shards):
  config = wds_config(wds_shards)
  tokenizer = tokenizers.build(config)
  batches = pipeline_checks.assert_resumes_batch_for_batch(config, tokenizer, consumed=5, compared=3)
  assert batches[-1]["bad_records"][0][record_stream.BAD_RECORD_COUNTERS.index("truncated_shard")] >= 1


def test_webdataset_as_a_mixture_entry(wds_shards):
  config = wds_config(wds_shards)
  config.data.source = "mixture"
  config.data.mixture = (f"1:webdataset:{wds_shards}/0000[01].tar", f"1:webdataset:{wds_shards}/00002.tar")
  config_lib.validate(config)
  batches = pipeline_checks.assert_resumes_batch_for_batch(config, tokenizers.build(config), 3, 2)
  assert batches[0]["img1"].shape == (16, 16, 16, 3)


def test_tars_without_images_or_captions_are_explained(tmp_path):
  write_tar(tmp_path / "a.tar", [(f"{i}.jpeg.json", b"{}") for i in range(3)] + [("x.cls", b"1")])
  config = wds_config(tmp_path)
  with pytest.raises(record_stream.DataSourceError, match=r"extensions \['cls', 'jpeg.json'\]"):
    webdataset_source.check_usable(record_stream.list_files(config.data.webdataset.files), config.data)
  (tmp_path / "a.tar").write_bytes(b"<html>403 Forbidden</html>")
  with pytest.raises(record_stream.DataSourceError, match="hold no samples"):
    webdataset_source.check_usable(record_stream.list_files(config.data.webdataset.files), config.data)


def _main(workdir, *flags, wait=True):
  args = [sys.executable, "-m", "declip_jax.main", "--config=tests/tiny_config.py", f"--workdir={workdir}",
          *flags]
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
  if not wait:
    return subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
  out = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
  assert out.returncode == 0, out.stderr[-3000:]
  return out


def test_training_on_webdataset_is_killed_and_resumes_to_the_same_losses(wds_shards, tmp_path):
  flags = ["--config.data.source=webdataset", f"--config.data.webdataset.files={wds_shards}/*.tar",
           "--config.data.webdataset.cycle_length=2", f"--config.data.vocab_path={wds_shards}/vocab.txt",
           "--config.data.shuffle_window=8", "--config.data.max_caption_chars=200",
           "--config.model.text.vocab_size=90", "--config.evals={}", "--config.checkpoint.every_steps=2",
           "--config.checkpoint.async_save=False", "--config.train.log_every_steps=1"]
  _main(tmp_path / "straight", "--config.train.num_steps=12", *flags)
  proc = _main(tmp_path / "killed", "--config.train.num_steps=400", *flags, wait=False)
  checkpoints = tmp_path / "killed" / "checkpoints"
  deadline = time.time() + 300
  while time.time() < deadline and not any(p.name.isdigit() and int(p.name) >= 2 for p in checkpoints.glob("*")):
    time.sleep(0.2)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  saved = sorted(int(p.name) for p in checkpoints.glob("*") if p.name.isdigit())
  assert saved and saved[-1] < 12, saved
  out = _main(tmp_path / "killed", "--config.train.num_steps=12", *flags)
  assert f"Resumed from the checkpoint at step {saved[-1]}" in out.stderr
  straight = logs.read_scalars(str(tmp_path / "straight"), ("train/", "data/"))
  resumed = logs.read_scalars(str(tmp_path / "killed"), ("train/", "data/"))
  for tag in [t for t in straight if t.startswith("train/loss")] + [f"data/{n}" for n in
                                                                      record_stream.BAD_RECORD_COUNTERS]:
    want = dict(straight[tag])
    got = dict(resumed[tag])  # The killed run's steps past its checkpoint are logged again by the resumed one.
    assert {s: got[s] for s in want} == want, tag
  counts = {n: dict(straight[f"data/{n}"])[12] for n in record_stream.BAD_RECORD_COUNTERS}
  assert counts["truncated_shard"] >= 1 and counts["skipped_sample_without_caption"] >= 2, counts
