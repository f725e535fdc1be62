"""Command line: OpenAI CLIP / open_clip weights into a declip_jax run, and a declip_jax run out to open_clip.

  # Start a run from released weights (writes the step-0 checkpoint; then train or --mode=eval as usual):
  python -m declip_jax.interop.convert --direction=import --weights=ViT-B-32.safetensors \
      --config=configs/clip_vit_b32.py --workdir=runs/from_openai [--config.* ...]
  # The authors' checkpoints (CLIP, DeCLIP, SLIP, FILIP, DeFILIP; ViT-B/32, RN50), into the matching config:
  python -m declip_jax.interop.convert --direction=import --format=declip_official \
      --weights=declip_vitb32.pth.tar --config=configs/declip_vit_b32.py --workdir=runs/declip_official \
      --config.data.vocab_path=bpe_simple_vocab_16e6.txt.gz
  # Fine-tune at full size from a run pretrained at a lower resolution (CLIPA; position embeddings resized):
  python -m declip_jax.interop.convert --direction=import --format=declip_jax --weights=runs/declip_128px \
      --config=configs/declip_vit_b32.py --workdir=runs/declip_224px_finetune [--config.* ...]
  # A trained run as open_clip weights + model config (CLIP_benchmark and open_clip load it unmodified):
  python -m declip_jax.interop.convert --direction=export --workdir=runs/declip --output_dir=exported/

Import covers the image and text towers (a ResNet's BatchNorm statistics too) and the logit scale; from
open_clip weights the heads DeCLIP adds (SimSiam, MLM) start from their initialisation, from the authors'
checkpoints (`--format=declip_official`, interop/official_weights.py) the methods' heads are imported too. The NN
queue always starts from its initialisation (the official checkpoints do not hold it). Export of a model trained
with the `declip` token layout moves the SOT/EOT rows to OpenAI's ids (drops [MASK]), so that open_clip's stock
tokenizer feeds it.
"""

import sys

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

def import_weights(config, weights_path: str, workdir: str, weights_format: str = "open_clip") -> int:
  """Writes a step-0 checkpoint of `config` in `workdir` whose towers (and, from the authors' checkpoints, heads)
  hold the weights; returns how many arrays were imported (all of them but those the official model never uses,
  which are logged; otherwise WeightMismatchError)."""
  from declip_jax.training import state as state_lib, train_setup  # pylint: disable=g-import-not-at-top
  from declip_jax.interop import official_weights, open_clip_weights  # pylint: disable=g-import-not-at-top
  setup = train_setup.Setup(config)
  state = setup.init_state()
  variables = state_lib.model_variables(state)
  if weights_format == "declip_jax":
    imported, count = from_run(weights_path, variables)
    _write_step_zero(config, workdir, weights_path, state, imported)
    return count
  if weights_format == "declip_official":
    state_dict = official_weights.read_checkpoint(weights_path)
    imported, ignored = official_weights.from_official_state_dict(state_dict, config, variables)
  else:
    state_dict = open_clip_weights.read_state_dict(weights_path)
    table = state.params["text_tower"]["token_embedding"]["embedding"]
    released = state_dict.get("token_embedding.weight")
    if released is not None and released.shape[0] + 1 == table.shape[0] and config.data.token_layout == "openai":
      # OpenAI's 49,408 ids, plus the [MASK] id the `openai` layout appends: that row keeps its initialisation.
      state_dict["token_embedding.weight"] = np.concatenate([released, np.asarray(table[-1:], np.float32)])
    imported, ignored = open_clip_weights.from_torch_state_dict(state_dict, config, variables), []
  if ignored:
    logging.info("Ignored %d arrays the official model never uses: %s", len(ignored), ", ".join(ignored))
  _write_step_zero(config, workdir, weights_path, state, imported)
  return len(state_dict) - len(ignored)


def from_run(source_workdir: str, variables) -> tuple[dict, int]:
  """The parameters and BatchNorm statistics of another run's newest checkpoint, for a model whose variables
  are `variables`: the same shapes, except the position embeddings, carried to this model's patch grid and
  caption length (a run pretrained at a lower resolution or on shorter captions, fine-tuned at full size: CLIPA;
  `position_resize.carry_positions`). Variables the source run has not
  (heads of another method) are None: they keep their initialisation. Returns (them, how many were taken).

  Raises:
    open_clip_weights.WeightMismatchError: naming every variable whose shape cannot be carried over.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from declip_jax import loading  # pylint: disable=g-import-not-at-top
  from declip_jax.interop import open_clip_weights  # pylint: disable=g-import-not-at-top
  from declip_jax.models import position_resize  # pylint: disable=g-import-not-at-top
  source = jax.tree.map(np.asarray, jax.device_get(loading.load(source_workdir).variables))
  taken, mismatched = [], []

  def carry(path, target):
    node = source
    for key in path:
      node = node.get(key.key) if isinstance(node, dict) else None
    if node is None:
      return None
    name = "/".join(str(k.key) for k in path)
    if name.endswith("_tower/positional_embedding"):
      node = position_resize.carry_positions(name.split("/")[-2].removesuffix("_tower"), node, target)
    if tuple(node.shape) != tuple(target.shape):
      mismatched.append(f"{name}: {tuple(node.shape)} vs {tuple(target.shape)}")
      return None
    taken.append(name)
    return node

  imported = jax.tree_util.tree_map_with_path(carry, variables)
  if mismatched:
    raise open_clip_weights.WeightMismatchError(
        f"The run in {source_workdir} does not fit the configured model; shape mismatches ({len(mismatched)}): "
        + ", ".join(mismatched[:20]) + ".")
  return imported, len(taken)


def _write_step_zero(config, workdir: str, weights_path: str, state, imported) -> None:
  """Saves `state` with the `imported` variables (leaves that are None or absent keep their initialisation) as
  the step-0 checkpoint of an empty `workdir`."""
  import jax  # pylint: disable=g-import-not-at-top
  from declip_jax.training import checkpointing, state as state_lib  # pylint: disable=g-import-not-at-top

  def new_or_old(path, old):
    node = imported
    for key in path:
      node = node.get(key.key) if isinstance(node, dict) else None
    return old if node is None else jax.device_put(np.asarray(node, old.dtype), old.sharding)

  variables = jax.tree_util.tree_map_with_path(new_or_old, state_lib.model_variables(state))
  state = state.replace(params=variables["params"], batch_stats=variables["batch_stats"])
  ckpt = checkpointing.Checkpointer(workdir, config.checkpoint.keep, async_save=False)
  try:
    if ckpt.latest_step() is not None:
      raise FileExistsError(f"{ckpt.directory} already holds checkpoints; import into an empty --workdir.")
    ckpt.save(0, state, {"step": 0, "data_position": 0, "config": config.to_dict(), "imported_from": weights_path})
    ckpt.wait()
  finally:
    ckpt.close()


def export_weights(workdir: str, output_dir: str, name: str):
  """Writes `<name>.safetensors` + `<name>.json` (open_clip), `open_clip_config.json` and
  `open_clip_model.safetensors` (`local-dir:`) from the newest checkpoint of `workdir`.

  A model trained with `data.tokenizer=clip_bpe` is written with open_clip's id layout (SOT, EOT last, no [MASK]
  row). Trained on OpenAI's merges, open_clip's stock tokenizer feeds it; on another merges file, that file is
  copied beside the weights as `bpe_merges.txt.gz` and named in `text_cfg.tokenizer_kwargs.bpe_path` (an absolute
  path: move the directory and that entry must follow), so that `open_clip.get_tokenizer('local-dir:...')` and
  CLIP_benchmark tokenize as training did."""
  import declip_jax  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top
  from declip_jax import token_ids  # pylint: disable=g-import-not-at-top
  from declip_jax.interop import open_clip_weights  # pylint: disable=g-import-not-at-top
  model = declip_jax.load(workdir)
  data = model.config.data
  declip_layout = data.tokenizer == "clip_bpe" and data.token_layout == "declip"
  state_dict = open_clip_weights.to_torch_state_dict(model.variables, model.config,
                                                     openai_token_layout=declip_layout)
  model_config = open_clip_weights.open_clip_model_config(model.config)
  if data.tokenizer == "clip_bpe":
    if not declip_layout:  # The openai layout appends [MASK] last (the declip one's was dropped by the remap).
      state_dict["token_embedding.weight"] = state_dict["token_embedding.weight"][:-1]
    rows = state_dict["token_embedding.weight"].shape[0]
    model_config["text_cfg"]["vocab_size"] = rows
    if rows != open_clip_weights.OPENAI_EOT + 1:  # Not OpenAI's 48,894 merges: ship the merges file.
      merges = epath.Path(output_dir) / "bpe_merges.txt.gz"
      merges.parent.mkdir(parents=True, exist_ok=True)
      token_ids.write_bpe_merges(str(merges), token_ids.read_bpe_merges(data.vocab_path)[:data.bpe_num_merges or None])
      model_config["text_cfg"]["tokenizer_kwargs"] = {"bpe_path": str(merges.resolve())}
  return open_clip_weights.write_open_clip(output_dir, state_dict, model_config, name,
                                           preprocess=open_clip_weights.preprocess_config(model.config))


def _define_flags():
  """Flags of the command (defined only when it runs, so importing this module defines none)."""
  flags.DEFINE_enum("direction", None, ["import", "export"], "Weights into or out of declip_jax.")
  config_flags.DEFINE_config_file("config", None, "Import: the config of the run to create.", lock_config=True)
  flags.DEFINE_string("weights", None, "Import: a .safetensors, .pt or .bin state dict, (--format="
                      "declip_official) an authors' .pth.tar checkpoint, or (--format=declip_jax) a run's workdir.")
  flags.DEFINE_enum("format", "open_clip", ["open_clip", "declip_official", "declip_jax"], "Import: OpenAI CLIP / "
                    "open_clip names, the authors' checkpoints (Sense-GVT/DeCLIP: every method's towers and heads), "
                    "or another declip_jax run (e.g. pretrained at a lower resolution: position embeddings resized).")
  flags.DEFINE_string("workdir", None, "Import: the new run's workdir; export: the trained run.")
  flags.DEFINE_string("output_dir", None, "Export: where the .safetensors and .json go.")
  flags.DEFINE_string("name", "declip_jax_model", "Export: the files' base name.")
  flags.mark_flags_as_required(["direction", "workdir"])


def main(argv):
  if len(argv) > 1:
    sys.exit(f"error: unexpected arguments {argv[1:]}")
  f = flags.FLAGS
  if f.direction == "import":
    if not f.weights or f.config is None:
      sys.exit("error: --direction=import needs --weights and --config.")
    count = import_weights(f.config, f.weights, f.workdir, f.format)
    print(f"imported {count} arrays from {f.weights} into the step-0 checkpoint of {f.workdir}")
  else:
    if not f.output_dir:
      sys.exit("error: --direction=export needs --output_dir.")
    weights, model_config = export_weights(f.workdir, f.output_dir, f.name)
    print(f"wrote {weights} and {model_config}; in open_clip: open_clip.add_model_config('{model_config}'), then "
          f"open_clip.create_model_and_transforms('{f.name}', pretrained='{weights}')")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
