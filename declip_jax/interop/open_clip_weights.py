"""OpenAI CLIP / open_clip PyTorch weights <-> declip_jax variables (ViT or ModifiedResNet image tower + text tower).

Works on plain NumPy arrays keyed by PyTorch names (`visual.conv1.weight`, ...), so neither this module nor
the core package imports torch. Reading `.safetensors` needs only the `safetensors` package; `.pt`/`.bin`
files are read with `torch.load(weights_only=True)` (no pickle code runs), and OpenAI's TorchScript `.pt`
archives with `torch.jit.load` (TorchScript deserialisation, not pickle).

Layouts: PyTorch Linear weights [out, in] are Flax kernels [in, out]; convolutions [out, in, kh, kw] are
[kh, kw, in, out]; LayerNorm/BatchNorm weight is scale; BatchNorm running_mean/running_var are the
`batch_stats` mean/var (num_batches_tracked is not used: momentum is fixed); with `model.scan_layers` the
transformer blocks are stacked on a leading [layers] axis under `blocks`, else named `block_<i>`. Paths below
start with the variable collection, "params" or "batch_stats".
"""

import json
import os
from typing import Any, Callable, Mapping, Optional

import ml_collections
import numpy as np
from etils import epath

from declip_jax.models import position_resize

# declip `token_layout` (BPE ids, then [MASK] 49406, SOT 49407, EOT 49408) vs OpenAI's (SOT 49406, EOT 49407).
DECLIP_MASK, DECLIP_SOT, DECLIP_EOT = 49406, 49407, 49408
OPENAI_SOT, OPENAI_EOT = 49406, 49407


class WeightMismatchError(ValueError):
  """The weights do not fit the architecture; the message lists the offending keys by name."""


def _linear(prefix: str) -> dict[str, tuple[str, Callable, Callable]]:
  return {f"{prefix}.weight": ("kernel", np.transpose, np.transpose), f"{prefix}.bias": ("bias", None, None)}


def _norm(prefix: str) -> dict[str, tuple[str, Callable, Callable]]:
  return {f"{prefix}.weight": ("scale", None, None), f"{prefix}.bias": ("bias", None, None)}


def _block_keys(torch_prefix: str) -> dict[str, tuple[tuple[str, ...], Any, Any]]:
  """PyTorch names of one residual block -> (Flax path inside the block, torch->flax, flax->torch)."""
  out = {}
  for torch_name, (leaf, to_flax, to_torch) in {**_norm("ln_1"), **_norm("ln_2"), **_linear("attn.out_proj"),
                                                **_linear("mlp.c_fc"), **_linear("mlp.c_proj")}.items():
    module = torch_name.rsplit(".", 1)[0].replace("mlp.", "").split(".")
    out[f"{torch_prefix}.{torch_name}"] = (tuple(module) + (leaf,), to_flax, to_torch)
  out[f"{torch_prefix}.attn.in_proj_weight"] = (("attn", "in_proj_kernel"), np.transpose, np.transpose)
  out[f"{torch_prefix}.attn.in_proj_bias"] = (("attn", "in_proj_bias"), None, None)
  return out


_CONV = (lambda w: np.transpose(w, (2, 3, 1, 0)), lambda k: np.transpose(k, (3, 2, 0, 1)))


def _batch_norm(torch_prefix: str, flax_path: tuple) -> dict[str, tuple[tuple, Any, Any, Any]]:
  return {f"{torch_prefix}.weight": (("params",) + flax_path + ("scale",), None, None, None),
          f"{torch_prefix}.bias": (("params",) + flax_path + ("bias",), None, None, None),
          f"{torch_prefix}.running_mean": (("batch_stats",) + flax_path + ("mean",), None, None, None),
          f"{torch_prefix}.running_var": (("batch_stats",) + flax_path + ("var",), None, None, None)}


def _resnet_key_map(config: ml_collections.ConfigDict) -> dict[str, tuple[tuple, Any, Any, Any]]:
  """CLIP's ModifiedResNet: stem conv/bn 1-3, layer<s>.<i> Bottlenecks (downsample.0 conv, .1 BatchNorm on
  each stage's first block), attnpool (positional_embedding, q/k/v/c_proj)."""
  keys = {}
  tower = ("image_tower",)
  for k in (1, 2, 3):
    keys[f"visual.conv{k}.weight"] = (("params",) + tower + (f"conv{k}", "kernel"), None, *_CONV)
    keys.update(_batch_norm(f"visual.bn{k}", tower + (f"bn{k}",)))
  for stage, blocks in enumerate(config.model.image.resnet_layers, start=1):
    for i in range(blocks):
      block, torch_block = tower + (f"layer{stage}_{i}",), f"visual.layer{stage}.{i}"
      for k in (1, 2, 3):
        keys[f"{torch_block}.conv{k}.weight"] = (("params",) + block + (f"conv{k}", "kernel"), None, *_CONV)
        keys.update(_batch_norm(f"{torch_block}.bn{k}", block + (f"bn{k}",)))
      if i == 0:
        keys[f"{torch_block}.downsample.0.weight"] = (("params",) + block + ("downsample_conv", "kernel"), None,
                                                      *_CONV)
        keys.update(_batch_norm(f"{torch_block}.downsample.1", block + ("downsample_bn",)))
  pool = tower + ("attnpool",)
  keys["visual.attnpool.positional_embedding"] = (("params",) + pool + ("positional_embedding",), None, None, None)
  for proj in ("q_proj", "k_proj", "v_proj", "c_proj"):
    for torch_name, (leaf, f, t) in _linear(f"visual.attnpool.{proj}").items():
      keys[torch_name] = (("params",) + pool + (proj, leaf), None, f, t)
  return keys


def _vit_key_map(config: ml_collections.ConfigDict) -> dict[str, tuple[tuple, Any, Any, Any]]:
  keys = {
      "visual.conv1.weight": (("params", "image_tower", "patch_embed", "kernel"), None, *_CONV),
      "visual.class_embedding": (("params", "image_tower", "class_embedding"), None, None, None),
      "visual.positional_embedding": (("params", "image_tower", "positional_embedding"), None, None, None),
      "visual.proj": (("params", "image_tower", "proj"), None, None, None),
  }
  for norm in ("ln_pre", "ln_post"):
    for torch_name, (leaf, f, t) in _norm(f"visual.{norm}").items():
      keys[torch_name] = (("params", "image_tower", norm, leaf), None, f, t)
  for i in range(config.model.image.layers):
    for torch_name, (path, f, t) in _block_keys(f"visual.transformer.resblocks.{i}").items():
      keys[torch_name] = (("params", "image_tower", "transformer", "blocks") + path, i, f, t)
  return keys


def _key_map(config: ml_collections.ConfigDict) -> dict[str, tuple[tuple, Any, Any, Any]]:
  """Every PyTorch key of the architecture -> (variable path, layer index or None, torch->flax, flax->torch)."""
  keys = _resnet_key_map(config) if config.model.image.arch == "resnet" else _vit_key_map(config)
  keys.update({
      "token_embedding.weight": (("params", "text_tower", "token_embedding", "embedding"), None, None, None),
      "positional_embedding": (("params", "text_tower", "positional_embedding"), None, None, None),
      "logit_scale": (("params", "logit_scale"), None, None, None),
  })
  for torch_name, (leaf, f, t) in _norm("ln_final").items():
    keys[torch_name] = (("params", "text_tower", "ln_final", leaf), None, f, t)
  for i in range(config.model.text.layers):
    for torch_name, (path, f, t) in _block_keys(f"transformer.resblocks.{i}").items():
      keys[torch_name] = (("params", "text_tower", "transformer", "blocks") + path, i, f, t)
  if config.model.text.projection_bias:
    keys["text_projection.weight"] = (("params", "text_tower", "projection", "kernel"), None, np.transpose,
                                      np.transpose)
    keys["text_projection.bias"] = (("params", "text_tower", "projection", "bias"), None, None, None)
  else:
    keys["text_projection"] = (("params", "text_tower", "projection", "kernel"), None, None, None)
  return keys


def _flax_path(path: tuple, layer, scan: bool) -> tuple:
  """Where a (possibly per-layer) parameter lives: stacked under `blocks` with scan, else under `block_<i>`."""
  if layer is None or scan:
    return path
  i = path.index("blocks")
  return path[:i] + (f"block_{layer}",) + path[i + 1:]


def _get(tree: Mapping, path: tuple):
  for key in path:
    tree = tree[key]
  return tree


def to_torch_state_dict(variables: Mapping, config: ml_collections.ConfigDict,
                        openai_token_layout: bool = False) -> dict[str, np.ndarray]:
  """declip_jax variables -> an open_clip `CLIP` state dict (float32 NumPy arrays, PyTorch layouts).

  Args:
    variables: {"params", "batch_stats"} (`batch_stats` only read for a ResNet tower).
    openai_token_layout: the model was trained with the `declip` id layout (49,409 ids); move SOT/EOT to
      OpenAI's ids and drop the [MASK] row, so that open_clip's stock tokenizer feeds it (49,408 rows).
  """
  out = {}
  for torch_name, (path, layer, _, to_torch) in _key_map(config).items():
    value = np.asarray(_get(variables, _flax_path(path, layer, config.model.scan_layers)), np.float32)
    if layer is not None and config.model.scan_layers:
      value = value[layer]
    out[torch_name] = np.array(to_torch(value) if to_torch else value, np.float32, order="C")
    if torch_name.endswith(".running_var"):  # PyTorch's BatchNorm buffer; unused with a fixed momentum.
      out[torch_name.replace(".running_var", ".num_batches_tracked")] = np.zeros((), np.int64)
  if openai_token_layout:
    table = out["token_embedding.weight"]
    if table.shape[0] != DECLIP_EOT + 1:
      raise WeightMismatchError(f"token_embedding has {table.shape[0]} rows; the declip layout has {DECLIP_EOT + 1}.")
    remapped = table[:OPENAI_EOT + 1].copy()
    remapped[OPENAI_SOT], remapped[OPENAI_EOT] = table[DECLIP_SOT], table[DECLIP_EOT]
    out["token_embedding.weight"] = remapped
  return out


def from_torch_state_dict(state_dict: Mapping[str, np.ndarray], config: ml_collections.ConfigDict,
                          abstract_variables: Mapping) -> dict:
  """An OpenAI CLIP / open_clip state dict -> declip_jax variables for the architecture `config` describes.

  Args:
    state_dict: PyTorch names -> arrays (a `module.` prefix, as DDP writes, is removed).
    abstract_variables: {"params", "batch_stats"} of the target model (arrays or ShapeDtypeStructs): their
      structure fixes the result's; leaves the weights do not cover (heads, e.g. SimSiam/MLM and their BatchNorm
      statistics) are returned as None.
  Raises:
    WeightMismatchError: listing unknown keys, missing keys and shape mismatches, by name.
  """
  state_dict = {k.removeprefix("module."): np.asarray(v) for k, v in state_dict.items()
                if not k.endswith(".num_batches_tracked")}
  state_dict.pop("attn_mask", None)  # Buffers some exports include.
  keys = _key_map(config)
  unknown = sorted(set(state_dict) - set(keys))
  missing = sorted(set(keys) - set(state_dict))
  scan = config.model.scan_layers
  stacked: dict[tuple, list] = {}
  values: dict[tuple, np.ndarray] = {}
  mismatched = []
  for torch_name, (path, layer, to_flax, _) in keys.items():
    if torch_name not in state_dict:
      continue
    value = state_dict[torch_name].astype(np.float32)
    value = to_flax(value) if to_flax else value
    flax_path = _flax_path(path, layer, scan)
    target = _get(abstract_variables, flax_path)
    expected = tuple(target.shape)
    if torch_name in ("visual.positional_embedding", "positional_embedding"):  # Another resolution or length.
      value = position_resize.carry_positions("image" if torch_name.startswith("visual.") else "text", value, target)
    if layer is not None and scan:
      expected = expected[1:]
    if value.shape != expected:
      mismatched.append(f"{torch_name}: {tuple(state_dict[torch_name].shape)} does not give {expected}")
      continue
    if layer is not None and scan:
      stacked.setdefault(flax_path, [None] * config.model[path[1].split("_")[0]].layers)[layer] = value
    else:
      values[flax_path] = value
  if unknown or missing or mismatched:
    parts = [f"{label} ({len(items)}): {', '.join(items[:20])}{' ...' if len(items) > 20 else ''}"
             for label, items in (("unknown keys", unknown), ("missing keys", missing),
                                  ("shape mismatches", mismatched)) if items]
    raise WeightMismatchError("The weights do not fit the configured model; " + "; ".join(parts) + ".")
  values.update({path: np.stack(layers) for path, layers in stacked.items()})

  def fill(tree, prefix=()):
    if isinstance(tree, Mapping):
      return {k: fill(v, prefix + (k,)) for k, v in tree.items()}
    return values.get(prefix)

  return fill(abstract_variables)


def open_clip_model_config(config: ml_collections.ConfigDict) -> dict:
  """The open_clip model config (the JSON `open_clip.create_model` reads) of the architecture."""
  m = config.model
  if m.image.arch == "resnet":  # open_clip builds a ModifiedResNet when `layers` is a list.
    vision = {"image_size": m.image.image_size, "layers": list(m.image.resnet_layers), "width": m.image.width,
              "head_width": m.image.width * 32 // m.image.heads}
  else:
    vision = {"image_size": m.image.image_size, "layers": m.image.layers, "width": m.image.width,
              "patch_size": m.image.patch_size, "head_width": m.image.width // m.image.heads}
  return {
      "embed_dim": m.embed_dim, "quick_gelu": True,
      "vision_cfg": vision,
      "text_cfg": {"context_length": m.text.context_length, "vocab_size": m.text.vocab_size, "width": m.text.width,
                   "heads": m.text.heads, "layers": m.text.layers, "proj_bias": bool(m.text.projection_bias)},
  }


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """Weights from a `.safetensors` file (no torch needed) or a PyTorch `.pt`/`.bin` file (torch needed)."""
  path = str(path)
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    return load_file(path)
  import torch  # pylint: disable=g-import-not-at-top
  try:
    loaded = torch.load(path, map_location="cpu", weights_only=True)
  except RuntimeError as e:
    if "TorchScript" not in str(e) and "constants.pkl" not in str(e):
      raise
    loaded = torch.jit.load(path, map_location="cpu").state_dict()  # OpenAI's released .pt files.
  if isinstance(loaded, Mapping) and "state_dict" in loaded and isinstance(loaded["state_dict"], Mapping):
    loaded = loaded["state_dict"]
  return {k: v.detach().float().numpy() for k, v in loaded.items() if hasattr(v, "detach")}


def preprocess_config(config: ml_collections.ConfigDict) -> dict:
  """open_clip's `preprocess_cfg` of the model: its image size and normalisation (the config's data.mean/std;
  DeCLIP's are ImageNet's, not OpenAI's), bicubic resize of the shorter side, centre crop, as evaluation sees
  images (CLIP_benchmark and open_clip read it from `open_clip_config.json`)."""
  return {"size": config.model.image.image_size, "mean": list(config.data.mean), "std": list(config.data.std),
          "interpolation": "bicubic", "resize_mode": "shortest"}


def write_open_clip(directory: str, state_dict: Mapping[str, np.ndarray], model_config: dict,
                    name: str = "declip_jax_model", preprocess: Optional[dict] = None) -> tuple[epath.Path, epath.Path]:
  """Writes `<name>.safetensors` and `<name>.json` (open_clip model config) into `directory`, and with
  `preprocess` also `open_clip_config.json` ({"model_cfg", "preprocess_cfg"}) and `open_clip_model.safetensors`
  (a hard link to the same weights where the filesystem has them), the layout open_clip loads as
  `local-dir:DIRECTORY` (and CLIP_benchmark as `--model local-dir:DIRECTORY`)."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  directory = epath.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  weights, cfg = directory / f"{name}.safetensors", directory / f"{name}.json"
  save_file({k: np.array(v, np.int64 if np.asarray(v).dtype == np.int64 else np.float32, order="C")
             for k, v in state_dict.items()}, str(weights))
  cfg.write_text(json.dumps(model_config, indent=2))
  if preprocess is not None:
    (directory / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_config,
                                                                 "preprocess_cfg": preprocess}, indent=2))
    local = directory / "open_clip_model.safetensors"
    if local.exists():
      local.unlink()
    try:
      os.link(weights, local)
    except OSError:  # No hard links here (an object store, another filesystem): a copy.
      weights.copy(local)
  return weights, cfg
