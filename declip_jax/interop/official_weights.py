"""The authors' released checkpoints (Sense-GVT/DeCLIP: CLIP, DeCLIP, SLIP, FILIP, DeFILIP; ViT-B/32 and RN50)
-> declip_jax variables.

A checkpoint is `torch.save({"model": state_dict, "optimizer": ..., "last_iter": ...})` of a distributed wrapper:
every key starts with `module.`. It is read with `torch.load(weights_only=True)`, which unpickles tensors and
plain containers only and refuses any other object, so no code from the file runs. The image tower's keys are
OpenAI's (`visual.*`; RN50 adds an unused `visual.fc`); the text tower sits under `encode_text.` (SLIP:
`text_encoder.`), its projection a Linear with bias. The methods' heads:

| official | declip_jax |
|---|---|
| `projector.linear{1,2,3}`, `bn{1,2,3}`, `predictor.linear1`, `bn1`, `predictor.layer2` (DeCLIP, DeFILIP) | `simsiam` |
| `text_label_predictor` (MLM head; FILIP has one that no loss reads) | `mlm_head` |
| `predictor_sim.linear{1,2,3}` + `bn{1,2}` (SLIP; its `bn3` is built but never applied) | `simclr` |
| `image_mapping`, `text_mapping`, `logit_scale_dense` (FILIP, DeFILIP) | `filip_*` |

declip_jax's Dense layers in front of a BatchNorm have no bias (a BatchNorm in training subtracts it again): the
official bias b is folded into the BatchNorm's running mean (mean - b), which gives the same function in both
modes. Keys the configured model has no place for are listed by name (unknown), as are missing keys and shape
mismatches; keys the official model carries but never uses (`visual.fc`, SLIP's `predictor_sim.bn3`, FILIP's
`text_label_predictor` when the model has no MLM head) are ignored and counted.
"""

from typing import Mapping

import ml_collections
import numpy as np

from declip_jax.interop import open_clip_weights

TEXT_PREFIXES = ("encode_text.", "text_encoder.")
UNUSED = ("visual.fc.", "predictor_sim.bn3.")


def read_checkpoint(path: str) -> dict[str, np.ndarray]:
  """The model state dict of an official `.pth.tar` as float32 NumPy arrays (`module.` removed), read with
  `torch.load(weights_only=True)` (tensors and plain containers only: no code from the file runs)."""
  import torch  # pylint: disable=g-import-not-at-top
  try:
    loaded = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # pylint: disable=broad-except  (UnpicklingError: an object weights_only refuses)
    raise open_clip_weights.WeightMismatchError(
        f"{path} cannot be read as a checkpoint of tensors (torch.load with weights_only=True refused it: "
        f"{str(e).splitlines()[0][:200]}).") from e
  state_dict = loaded.get("model", loaded) if isinstance(loaded, Mapping) else loaded
  if not isinstance(state_dict, Mapping):
    raise open_clip_weights.WeightMismatchError(f"{path} holds no state dict (expected {{'model': state_dict}}).")
  return {k.removeprefix("module."): v.detach().float().numpy() for k, v in state_dict.items()
          if hasattr(v, "detach") and not k.endswith("num_batches_tracked")}


def _linear(torch_name: str, path: tuple) -> dict:
  return {f"{torch_name}.weight": (("params",) + path + ("kernel",), np.transpose),
          f"{torch_name}.bias": (("params",) + path + ("bias",), None)}


def _batch_norm(torch_name: str, path: tuple) -> dict:
  return {f"{torch_name}.weight": (("params",) + path + ("scale",), None),
          f"{torch_name}.bias": (("params",) + path + ("bias",), None),
          f"{torch_name}.running_mean": (("batch_stats",) + path + ("mean",), None),
          f"{torch_name}.running_var": (("batch_stats",) + path + ("var",), None)}


def _mlp_before_batch_norms(layers: list[tuple[str, str, tuple, tuple]]) -> tuple[dict, dict]:
  """Keys of Linear+BatchNorm pairs whose Linear bias declip_jax folds: (key map, {bias key: its BatchNorm's
  running-mean key}). layers: (official linear, official BatchNorm, Dense path, BatchNorm path)."""
  keys, folded = {}, {}
  for linear, bn, dense_path, bn_path in layers:
    keys[f"{linear}.weight"] = (("params",) + dense_path + ("kernel",), np.transpose)
    keys.update(_batch_norm(bn, bn_path))
    folded[f"{linear}.bias"] = f"{bn}.running_mean"
  return keys, folded


def head_keys(config: ml_collections.ConfigDict) -> tuple[dict, dict]:
  """The heads the config's model has: (official name -> (variable path, torch->flax)), folded biases."""
  w, keys, folded = config.loss.weights, {}, {}
  if w.iss > 0:
    k, f = _mlp_before_batch_norms(
        [(f"projector.linear{i + 1}", f"projector.bn{i + 1}", ("simsiam", f"projector_dense{i}"),
          ("simsiam", f"projector_bn{i}")) for i in range(3)]
        + [("predictor.linear1", "predictor.bn1", ("simsiam", "predictor_dense0"), ("simsiam", "predictor_bn0"))])
    keys.update(k)
    folded.update(f)
    keys.update(_linear("predictor.layer2", ("simsiam", "predictor_dense1")))
  if w.simclr > 0:
    k, f = _mlp_before_batch_norms([(f"predictor_sim.linear{i + 1}", f"predictor_sim.bn{i + 1}",
                                     ("simclr", f"dense{i}"), ("simclr", f"bn{i}")) for i in range(2)])
    keys.update(k)
    folded.update(f)
    keys.update(_linear("predictor_sim.linear3", ("simclr", "dense2")))
  if w.tss > 0:
    keys.update(_linear("text_label_predictor", ("mlm_head", "dense")))
  if w.filip > 0:
    keys.update(_linear("image_mapping", ("filip_image_mapping", "dense")))
    keys.update(_linear("text_mapping", ("filip_text_mapping", "dense")))
    keys["logit_scale_dense"] = (("params", "logit_scale_dense"), lambda v: np.reshape(v, ()))
  return keys, folded


def from_official_state_dict(state_dict: Mapping[str, np.ndarray], config: ml_collections.ConfigDict,
                             abstract_variables: Mapping) -> tuple[dict, list[str]]:
  """An official state dict -> (declip_jax variables, the official keys ignored as unused).

  The towers and the logit scale go through `open_clip_weights.from_torch_state_dict` (OpenAI's names once the
  text tower's prefix is dropped); the heads through `head_keys`.

  Raises:
    WeightMismatchError: listing unknown keys, missing keys and shape mismatches, by name.
  """
  heads, folded = head_keys(config)
  ignored = sorted(k for k in state_dict if k.startswith(UNUSED) or (k.startswith("text_label_predictor.")
                                                                      and config.loss.weights.tss <= 0))
  towers, head_values = {}, {}
  for key, value in state_dict.items():
    if key in ignored:
      continue
    if key in heads or key in folded:
      head_values[key] = value
      continue
    name = next((key[len(p):] for p in TEXT_PREFIXES if key.startswith(p)), key)
    towers[name] = np.reshape(value, ()) if name == "logit_scale" else value
  head_paths = {path for path, _ in heads.values()}
  variables = open_clip_weights.from_torch_state_dict(
      towers, config, _without(abstract_variables, head_paths))
  missing = sorted((set(heads) | set(folded)) - set(head_values))
  mismatched = []
  for key, value in head_values.items():
    if key in folded:
      continue
    path, to_flax = heads[key]
    value = to_flax(value) if to_flax else value
    expected = tuple(open_clip_weights._get(abstract_variables, path).shape)  # pylint: disable=protected-access
    if value.shape != expected:
      mismatched.append(f"{key}: {np.shape(head_values[key])} does not give {expected}")
      continue
    if key in folded.values():  # A BatchNorm's running mean: less the folded Linear bias.
      bias = next(b for b, mean in folded.items() if mean == key)
      value = value - head_values.get(bias, 0.0)
    _set(variables, path, np.asarray(value, np.float32))
  if missing or mismatched:
    parts = [f"{label} ({len(items)}): {', '.join(items[:20])}{' ...' if len(items) > 20 else ''}"
             for label, items in (("missing keys", missing), ("shape mismatches", mismatched)) if items]
    raise open_clip_weights.WeightMismatchError("The weights do not fit the configured model's heads; "
                                                + "; ".join(parts) + ".")
  return variables, ignored


def _without(tree: Mapping, paths: set[tuple]) -> dict:
  """`tree` without the leaves at `paths` (so that the tower import does not count them as missing)."""
  def walk(node, prefix):
    if not isinstance(node, Mapping):
      return node
    return {k: walk(v, prefix + (k,)) for k, v in node.items() if prefix + (k,) not in paths}
  return walk(tree, ())


def _set(tree: dict, path: tuple, value) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value
