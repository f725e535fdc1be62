"""The evaluation suite end to end: datasets from TFDS and TFRecord files the tests write, mesh-sharded encoding
put back in dataset order, the linear probe's optimiser and model selection, periods, `declip_jax.load`, and
`--mode=eval` on 1 and 8 devices writing the same numbers."""

import io
import json
import os
import subprocess
import sys
import tarfile

import jax
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

import declip_jax
from declip_jax import builtin_vocabulary, config as config_lib, train
from declip_jax.data import tokenizers
from declip_jax.data.errors import DataSourceError
from declip_jax.evaluation import datasets, evaluations, linear_probe, retrieval, zero_shot
from declip_jax.models import declip
from declip_jax.training import train_setup
from tests.conftest import REPO, virtual_devices_flags
from tests.tiny_config import tiny_config

LABEL_NAMES = ["red_thing", "green_thing", "blue_thing"]


class DeclipTestLabels(tfds.core.GeneratorBasedBuilder):
  """A labelled image dataset (cifar10-like) generated in memory: a solid-colour image per example."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3)), "label": tfds.features.ClassLabel(names=LABEL_NAMES)}))

  def _split_generators(self, dl_manager):
    return {"test": self._generate_examples(11)}

  def _generate_examples(self, n):
    rng = np.random.default_rng(3)
    for i in range(n):
      image = np.zeros((12 + i, 10, 3), np.uint8)
      image[..., i % 3] = 200
      yield i, {"image": image + rng.integers(0, 40, image.shape, dtype=np.uint8), "label": i % 3}


# One worker runs the module (but the 8-device test, in the virtual-devices group), so the trained run is made
# once, not once per worker.
pytestmark = pytest.mark.xdist_group("eval_suite")


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("tfds_labels")
  DeclipTestLabels(data_dir=str(root)).download_and_prepare()
  return root


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
  """A tiny DeCLIP run trained 6 steps: its workdir."""
  workdir = tmp_path_factory.mktemp("trained")
  train.run(tiny_config(), str(workdir))
  return workdir


def _png(array) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, "PNG")
  return buffer.getvalue()


def _model_and_variables(workdir):
  loaded = declip_jax.load(str(workdir))
  return loaded, loaded.module, loaded.variables


def _direct_image_embeddings(module, variables, images):
  return np.asarray(module.apply(variables, images, method=declip.DeCLIP.encode_image))


def test_linear_probe_solution_satisfies_the_optimality_condition():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(120, 6)).astype(np.float32)
  y = rng.integers(0, 4, 120)
  l2 = 0.05
  p = jax.device_get(linear_probe.fit(x, y, l2, 4))
  logits = x @ p["w"] + p["b"]
  probs = np.exp(logits - logits.max(1, keepdims=True))
  probs /= probs.sum(1, keepdims=True)
  residual = (probs - np.eye(4)[y]) / len(x)  # Gradient of the mean cross-entropy, in plain NumPy.
  grad_w, grad_b = x.T @ residual + l2 * p["w"], residual.sum(0)
  assert np.abs(grad_w).max() < 1e-5 and np.abs(grad_b).max() < 1e-5


def test_linear_probe_chooses_the_l2_strength_on_validation():
  rng = np.random.default_rng(1)
  centres = rng.normal(size=(3, 5)) * 4
  y = rng.integers(0, 3, 300)
  x = (centres[y] + rng.normal(size=(300, 5))).astype(np.float32)
  metrics, l2 = linear_probe.evaluate(x[:200], y[:200], x[200:], y[200:], 3, (1e3, 1e-3), 0.25)
  assert l2 == 1e-3  # 1e3 shrinks the weights to ~0: every validation prediction is one class.
  assert metrics["linear_probe_top1"] > 0.95 and metrics["linear_probe_validation_top1"] > 0.95
  # Equally good strengths: the larger (simpler) one wins.
  _, l2 = linear_probe.evaluate(x[:200], y[:200], x[200:], y[200:], 3, (1e-4, 1e-3), 0.25)
  assert l2 == 1e-3


def test_each_evaluation_has_its_own_period(trained_run):
  config = tiny_config()
  config.eval.every_steps = 4
  config.evals.zero_shot_shape.every_steps = 3
  loaded = declip_jax.load(str(trained_run))
  evals = evaluations.Evaluations(config, loaded.module, loaded.tokenizer, loaded.mesh)
  assert evals.due(3) == ["zero_shot_shape"]
  assert evals.due(4) == ["retrieval", "zero_shot_colour"]
  assert evals.due(5) == [] and len(evals.due(5, last=True)) == 3
  config.evals.retrieval.enabled = False
  assert "retrieval" not in evaluations.Evaluations(config, loaded.module, loaded.tokenizer, loaded.mesh).specs


def test_zero_shot_on_tfds_matches_a_direct_computation(trained_run, tfds_dir):
  loaded, module, variables = _model_and_variables(trained_run)
  config = tiny_config()
  config.eval.batch_size = 4  # 11 images: three batches, the last one padded.
  config.evals = {"labels": config_lib.eval_spec("zero_shot", "tfds:declip_test_labels/test",
                                                 tfds_data_dir=str(tfds_dir), templates="builtin_colour")}
  evals = evaluations.Evaluations(config, module, loaded.tokenizer, loaded.mesh)
  result = evals.run(variables, 7)["labels"]
  assert result["dataset"] == "tfds:declip_test_labels/test" and result["split"] == "test"
  assert result["template_set"] == "builtin_colour" and result["num_classes"] == 3 and result["num_examples"] == 11

  # The same numbers from the raw TFDS examples, one batch, in the dataset's order.
  ds = tfds.load("declip_test_labels", split="test", data_dir=str(tfds_dir), shuffle_files=False)
  transform = datasets.eval_transform(config)
  examples = list(ds.as_numpy_iterator())
  images = np.stack([transform(tf.constant(e["image"])).numpy() for e in examples])
  labels = np.asarray([e["label"] for e in examples])
  names = [n.replace("_", " ") for n in LABEL_NAMES]
  weights = zero_shot.classifier_weights(loaded.encode_text, names, builtin_vocabulary.ZERO_SHOT_TEMPLATES["colour"])
  expected = zero_shot.classification_metrics(_direct_image_embeddings(module, variables, images), weights, labels)
  assert result["metrics"] == pytest.approx(expected, abs=1e-9)


def _write_captioned_shards(path, rng):
  """5 records with 1-3 captions each; record 2's image is corrupt, record 3 has an empty caption among two."""
  captions = [["red circle"], ["blue square", "a blue square"], ["green circle"], ["", "small red square"],
              ["a big blue circle", "blue circle", "circle"]]
  images = []
  with tf.io.TFRecordWriter(str(path)) as writer:
    for i, caps in enumerate(captions):
      image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
      images.append(image)
      data = b"not an image" if i == 2 else _png(image)
      feature = {"jpg": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data])),
                 "txt": tf.train.Feature(bytes_list=tf.train.BytesList(value=[c.encode() for c in caps]))}
      writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
  return images, captions


def _write_labelled_shard(path, rng, count: int):
  """`count` PNGs with an integer label (i % 3) and no class names."""
  with tf.io.TFRecordWriter(str(path)) as writer:
    for i in range(count):
      feature = {"jpg": tf.train.Feature(bytes_list=tf.train.BytesList(
                     value=[_png(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))])),
                 "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 3]))}
      writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


def test_linear_probe_on_tfrecord_needs_no_class_names(trained_run, tmp_path):
  loaded, module, variables = _model_and_variables(trained_run)
  _write_labelled_shard(tmp_path / "train.tfrecord", np.random.default_rng(0), count=12)
  _write_labelled_shard(tmp_path / "test.tfrecord", np.random.default_rng(1), count=6)
  config = tiny_config()
  config.evals = {"probe": config_lib.eval_spec("linear_probe", f"tfrecord:{tmp_path}/test.tfrecord",
                                                train_dataset=f"tfrecord:{tmp_path}/train.tfrecord")}
  evaluations.check_data(config)
  result = evaluations.Evaluations(config, module, loaded.tokenizer, loaded.mesh).run(variables, 1)["probe"]
  assert result["num_examples"] == 6 and result["num_train_examples"] == 12
  assert 0 <= result["metrics"]["linear_probe_top1"] <= 1


def test_retrieval_on_webdataset_shards_matches_the_tfrecord_one(trained_run, tmp_path):
  loaded, module, variables = _model_and_variables(trained_run)
  rng = np.random.default_rng(0)
  with tarfile.open(tmp_path / "eval-000.tar", "w") as tar:
    for i, caption in enumerate(["red circle", "blue square", "green circle", "small red square"]):
      for ext, data in (("png", _png(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))),
                        ("txt", caption.encode()), ("json", b"{}")):
        info = tarfile.TarInfo(f"{i:05d}.{ext}")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        if ext == "png":
          with tf.io.TFRecordWriter(str(tmp_path / f"{i:05d}.tfrecord")) as writer:
            feature = {"jpg": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data])),
                       "txt": tf.train.Feature(bytes_list=tf.train.BytesList(value=[caption.encode()]))}
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
  config = tiny_config()
  config.evals = {"wds": config_lib.eval_spec("retrieval", f"webdataset:{tmp_path}/*.tar"),
                  "tfr": config_lib.eval_spec("retrieval", f"tfrecord:{tmp_path}/*.tfrecord")}
  evaluations.check_data(config)
  results = evaluations.Evaluations(config, module, loaded.tokenizer, loaded.mesh).run(variables, 1)
  assert results["wds"]["num_examples"] == 4 and results["wds"]["num_captions"] == 4
  assert results["wds"]["metrics"] == results["tfr"]["metrics"]


def test_multi_caption_retrieval_from_tfrecord_skips_bad_records(trained_run, tmp_path):
  loaded, module, variables = _model_and_variables(trained_run)
  images, captions = _write_captioned_shards(tmp_path / "eval.tfrecord", np.random.default_rng(0))
  config = tiny_config()
  config.eval.batch_size = 2
  config.evals = {"ret": config_lib.eval_spec("retrieval", f"tfrecord:{tmp_path}/*.tfrecord")}
  result = evaluations.Evaluations(config, module, loaded.tokenizer, loaded.mesh).run(variables, 1)["ret"]
  kept = [0, 1, 3, 4]
  texts = [c for i in kept for c in captions[i] if c]
  owner = np.asarray([k for k, i in enumerate(kept) for c in captions[i] if c])
  assert result["num_examples"] == 4 and result["num_captions"] == len(texts) == 7
  transform = datasets.eval_transform(config)
  x = np.stack([transform(tf.constant(images[i])).numpy() for i in kept])
  expected = retrieval.recall_at_k(_direct_image_embeddings(module, variables, x), loaded.encode_text(texts), owner)
  assert result["metrics"] == pytest.approx(expected, abs=1e-9)


def test_missing_or_misnamed_evaluation_data_is_named(tmp_path, tfds_dir):
  config = tiny_config()
  labelled = tmp_path / "labelled.tfrecord"
  _write_labelled_shard(labelled, np.random.default_rng(0), count=4)
  spec = config_lib.eval_spec("zero_shot", f"tfrecord:{labelled}")
  with pytest.raises(DataSourceError, match="evals.x: zero-shot classification on tfrecord data needs "
                                            "evals.x.class_names_file"):
    datasets.check_available(spec, config, "x")
  spec = config_lib.eval_spec("linear_probe", f"tfrecord:{labelled}", train_dataset=f"tfrecord:{labelled}",
                              label_key="class")
  with pytest.raises(DataSourceError, match=r"evals.x.label_key 'class' is not a feature of .*\['jpg', 'label'\]"):
    datasets.check_available(spec, config, "x")
  (tmp_path / "garbage.tfrecord").write_bytes(b"this is not a TFRecord file at all")
  spec = config_lib.eval_spec("linear_probe", f"tfrecord:{tmp_path}/garbage.tfrecord",
                              train_dataset=f"tfrecord:{labelled}")
  with pytest.raises(DataSourceError, match="cannot be read as TFRecords"):
    datasets.check_available(spec, config, "x")
  spec = config_lib.eval_spec("retrieval", f"webdataset:{tmp_path}/none*.tar")
  with pytest.raises(DataSourceError, match="evals.x.dataset: no file matches"):
    datasets.check_available(spec, config, "x")
  spec = config_lib.eval_spec("zero_shot", "builtin:test", label_key="weight")
  with pytest.raises(DataSourceError, match="evals.x.label_key 'weight'"):
    datasets.check_available(spec, config, "x")
  spec = config_lib.eval_spec("zero_shot", "tfds:declip_test_labels/train", tfds_data_dir=str(tfds_dir))
  with pytest.raises(DataSourceError, match="'train' is not a split of declip_test_labels"):
    datasets.check_available(spec, config, "x")
  spec = config_lib.eval_spec("zero_shot", "tfds:declip_test_labels/test", tfds_data_dir=str(tmp_path))
  with pytest.raises(DataSourceError, match="not prepared"):
    datasets.check_available(spec, config, "x")
  names = tmp_path / "names.txt"
  names.write_text("crimson\nemerald\nnavy\n")
  spec = config_lib.eval_spec("zero_shot", "tfds:declip_test_labels/test", tfds_data_dir=str(tfds_dir),
                              class_names_file=str(names))
  assert datasets.labelled_images(spec, config, "x").class_names == ("crimson", "emerald", "navy")
  with pytest.raises(config_lib.ConfigError, match="unknown setting 'template'"):
    config_lib.eval_spec("zero_shot", "builtin:test", template="x")
  config.evals = {"x": config_lib.eval_spec("zero_shot", "builtin:test", templates="nope")}
  with pytest.raises(config_lib.ConfigError, match="evals.x.templates 'nope'"):
    config_lib.validate(config)


def test_load_restores_params_and_encodes_like_the_evaluation(trained_run):
  loaded = declip_jax.load(str(trained_run))
  assert loaded.step == 6
  setup = train_setup.Setup(tiny_config())
  state = setup.init_state()
  assert jax.tree.structure(loaded.params) == jax.tree.structure(state.params)
  assert jax.tree.structure(loaded.variables["batch_stats"]) == jax.tree.structure(state.batch_stats)
  # encode_text == the model applied to the tokenizer's ids; preprocess == the evaluation's transform.
  texts = ["a red circle", "a blue square on the left"]
  tokens = tokenizers.build(loaded.config).tokenize_numpy(texts)
  direct = loaded.module.apply({"params": loaded.params}, tokens, method=declip.DeCLIP.encode_text)
  np.testing.assert_allclose(loaded.encode_text(texts), direct, rtol=1e-6, atol=1e-6)
  image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
  expected = datasets.eval_transform(loaded.config)(tf.constant(image)).numpy()
  np.testing.assert_allclose(loaded.preprocess(Image.fromarray(image)), expected, atol=1e-6)
  w = loaded.zero_shot_classifier(["red", "blue"], "builtin_colour")
  assert w.shape == (2, 16) and np.allclose(np.linalg.norm(w, axis=1), 1)
  with pytest.raises(FileNotFoundError, match="No checkpoint for step 5"):
    declip_jax.load(str(trained_run), step=5)


def test_load_detects_altered_parameters(trained_run, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  copy = tmp_path / "run"
  shutil.copytree(trained_run / "checkpoints" / "6", copy / "checkpoints" / "6")
  meta = copy / "checkpoints" / "6" / "meta" / "metadata"
  record = json.loads(meta.read_text())
  record["fingerprint"][1] = (record["fingerprint"][1] + 1) % 2**32  # The first parameter's checksum.
  meta.write_text(json.dumps(record))
  from declip_jax.training import checkpointing  # pylint: disable=g-import-not-at-top
  with pytest.raises(checkpointing.CorruptCheckpointError, match="params"):
    declip_jax.load(str(copy))


@pytest.fixture(scope="module")
def demo_checkpoint(tmp_path_factory):
  """configs/demo.py trained 2 steps (its evaluations off while training): the checkpoint's step directory."""
  from configs import demo  # pylint: disable=g-import-not-at-top
  config = demo.get_config()
  config.train.num_steps = 2
  for spec in config.evals.values():
    spec.enabled = False
  workdir = tmp_path_factory.mktemp("demo")
  train.run(config, str(workdir))
  return workdir / "checkpoints" / "2"


@pytest.mark.xdist_group("virtual_devices")
def test_eval_mode_writes_the_same_numbers_on_one_and_eight_devices(demo_checkpoint, tmp_path):
  results = {}
  for devices in (1, 8):
    workdir = tmp_path / str(devices)
    (workdir / "checkpoints").mkdir(parents=True)
    os.symlink(demo_checkpoint, workdir / "checkpoints" / "2")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "XLA_FLAGS": virtual_devices_flags(devices)}
    out = subprocess.run([sys.executable, "-m", "declip_jax.main", "--config=configs/demo.py", f"--workdir={workdir}",
                          "--mode=eval", "--config.evals.linear_probe_shape.num_train_examples=2000"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    results[devices] = json.loads((workdir / "eval_results.json").read_text())
  assert sorted(results[1]) == ["linear_probe_shape", "retrieval", "zero_shot_colour", "zero_shot_shape"]
  for name in results[1]:
    assert results[8][name]["metrics"] == pytest.approx(results[1][name]["metrics"], abs=1e-12), name
    assert {k: v for k, v in results[8][name].items() if k != "metrics"} == \
        {k: v for k, v in results[1][name].items() if k != "metrics"}
