"""Loading a trained model for evaluation: `declip_jax.load(workdir)`.

Restores what inference uses, the parameters and BatchNorm statistics (not the optimizer state or the queue),
on whatever devices this process has, from a checkpoint written on any device count. The model and its
tokenizer are rebuilt from the config saved with the checkpoint.
"""

import functools
import json
from typing import Any, Optional, Sequence, Union

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import tensorflow as tf
from etils import epath
from jax.sharding import Mesh

from declip_jax import config as config_lib, parallel
from declip_jax.training import checkpointing, optim, state as state_lib
from declip_jax import templates as template_sets
from declip_jax.data import pipeline, tokenizers
from declip_jax.evaluation import datasets, encoding, zero_shot
from declip_jax.models import declip


def _merge(defaults: ml_collections.ConfigDict, saved: dict) -> None:
  """Overwrites `defaults` with the saved values of keys it has (keys from older or newer versions are ignored)."""
  for key, value in saved.items():
    if key not in defaults:
      continue
    if isinstance(defaults[key], ml_collections.ConfigDict) and isinstance(value, dict):
      _merge(defaults[key], value)
    else:
      default = defaults[key]
      defaults[key] = tuple(value) if isinstance(default, tuple) and isinstance(value, list) else value


def config_from_saved(saved: dict) -> ml_collections.ConfigDict:
  """The experiment config written with a checkpoint, on top of today's defaults."""
  c = config_lib.base_config()
  _merge(c, saved)
  return c


def _checkpoint_dir(path: epath.Path, step: Optional[int]) -> epath.Path:
  """The step directory for a workdir, its checkpoints/ directory, or a step directory itself."""
  if (path / "state").exists() and (path / "meta").exists():
    return path
  root = path / "checkpoints" if (path / "checkpoints").exists() else path
  steps = sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.exists() else []
  if not steps:
    raise FileNotFoundError(f"No checkpoint in {path} (expected a workdir, its checkpoints/ directory or a step "
                            "directory).")
  if step is None:
    return root / str(steps[-1])
  if step not in steps:
    raise FileNotFoundError(f"No checkpoint for step {step} in {root}; there are {steps}.")
  return root / str(step)


class LoadedModel:
  """A trained DeCLIP/CLIP model for inference.

  Attributes:
    config: the experiment config it was trained with; step: the checkpoint's step; variables: {"params",
    "batch_stats"} (BatchNorm running statistics; {} without BatchNorm); params: variables["params"];
    tokenizer: the model's own tokenizer; image_size: the side of `preprocess`'s output.
  """

  def __init__(self, config: ml_collections.ConfigDict, variables: dict[str, Any], step: int,
               tokenizer: tokenizers.Tokenizer, module: declip.DeCLIP, mesh: Mesh, batch_size: int = 256):
    self.config, self.variables, self.step = config, variables, step
    self.params = variables["params"]
    self.tokenizer, self.module, self.mesh = tokenizer, module, mesh
    self.image_size = config.model.image.image_size
    self._encoder = encoding.Encoder(module, mesh, batch_size)
    self._transform = datasets.eval_transform(config)

  def preprocess(self, image) -> np.ndarray:
    """One image (uint8 [H, W, 3] array or PIL image, any size) -> [S, S, 3] float32: the eval transform
    (shorter side to S / data.eval_crop_fraction, centre crop, normalised), as evaluation sees it."""
    image = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image, np.uint8)
    return self._transform(tf.constant(image)).numpy()

  def _encode_images(self, images: np.ndarray, kind: str) -> np.ndarray:
    images = np.asarray(images, np.float32)
    n = self._encoder.local_batch
    rows = ((images[s: s + n], np.arange(s, min(s + n, len(images))), np.zeros(min(n, len(images) - s)))
            for s in range(0, len(images), n))
    return self._encoder.encode(self.variables, kind, rows, images.shape[1:], np.float32)[0]

  def encode_image(self, images: np.ndarray, normalize: bool = False) -> np.ndarray:
    """[N, S, S, 3] preprocessed images -> [N, D] image embeddings (unit length with normalize=True)."""
    emb = self._encode_images(images, "image")
    return emb / np.linalg.norm(emb, axis=-1, keepdims=True) if normalize else emb

  def image_features(self, images: np.ndarray) -> np.ndarray:
    """[N, S, S, 3] preprocessed images -> [N, width] image-tower features before the projection."""
    return self._encode_images(images, "image_features")

  def encode_text(self, texts: Sequence[str], normalize: bool = False) -> np.ndarray:
    """N raw strings -> [N, D] text embeddings, tokenised with the model's tokenizer."""
    tokens = self.tokenizer.tokenize_numpy(list(texts))
    emb = self._encoder.encode_tokens(self.variables, tokens, split_over_processes=False)[0]
    return emb / np.linalg.norm(emb, axis=-1, keepdims=True) if normalize else emb

  def zero_shot_classifier(self, class_names: Sequence[str],
                           templates: Union[str, Sequence[str]] = "openai_imagenet_80") -> np.ndarray:
    """[C, D] unit class embeddings: the renormalised mean of the normalised embeddings of each class's prompts.

    templates: a template set's name (declip_jax/templates.py) or strings with one "{}".
    """
    if isinstance(templates, str):
      templates = template_sets.get(templates)
    return zero_shot.classifier_weights(self.encode_text, list(class_names), list(templates))

  def classify(self, images: np.ndarray, classifier: np.ndarray) -> np.ndarray:
    """[N, S, S, 3] preprocessed images, [C, D] classifier -> [N, C] cosine similarities."""
    return self.encode_image(images, normalize=True) @ np.asarray(classifier, np.float32).T


def load(path: str, step: Optional[int] = None, batch_size: int = 256, devices: Optional[list] = None) -> LoadedModel:
  """Loads the parameters and BatchNorm statistics of a training run's newest checkpoint (or of `step`).

  Args:
    path: a --workdir, its checkpoints/ directory, or one step's directory (local or gs://).
    batch_size: images or texts encoded per call.
    devices: the mesh's devices: this process's (the default), or every process's (`jax.devices()`: each
      process then feeds its own rows to the encoders, and all get every output).
  Raises:
    FileNotFoundError: no checkpoint there.
    checkpointing.CorruptCheckpointError: the parameters read back differ from the ones saved.
  """
  pipeline.hide_accelerators_from_tensorflow()
  directory = _checkpoint_dir(epath.Path(path), step)
  meta = json.loads((directory / "meta" / "metadata").read_text())
  config = config_from_saved(meta["config"])
  tokenizer = tokenizers.build(config)
  module = declip.build_model(config, tokenizer.eot_id)
  abstract_state = jax.eval_shape(functools.partial(
      state_lib.create_train_state, config, module, optim.build_optimizer(config),
      state_lib.sample_batch_spec(config, batch_size=1)), jax.random.PRNGKey(0))
  mesh = parallel.make_mesh((-1, 1, 1), devices or jax.local_devices())
  replicated = parallel.replicated(mesh)
  fields = ["params"] + (["batch_stats"] if abstract_state.batch_stats else [])
  target = {field: jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated),
                                getattr(abstract_state, field)) for field in fields}
  with ocp.PyTreeCheckpointer() as reader:
    restored = reader.restore(directory / "state", args=ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True))
  for field in fields:
    checkpointing.verify_fingerprint(restored[field], abstract_state, meta, field=field)
  variables = {"params": restored["params"], "batch_stats": restored.get("batch_stats", {})}
  return LoadedModel(config, variables, int(meta["step"]), tokenizer, module, mesh, batch_size)
