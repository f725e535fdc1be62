"""Run in a fresh process with 8 virtual CPU devices (see test_multidevice.py).

Trains a few steps of the tiny DeCLIP config on 1 device and on several meshes of 8 devices from the same
initial state and (synthetic: no TensorFlow, so the newest-JAX CI environment runs it too) batches, and prints the
largest difference (relative above 1, absolute below) of losses, parameters, BatchNorm statistics and NN queue
contents against the single-device run, one line per mesh.

AdamW's epsilon is raised to 1e-3 here. Some parameters have an exactly-zero true gradient (the key part of the
attention input bias: softmax ignores a constant added to every key's logit), so their computed gradient is
float rounding noise, whose sign depends on the reduction order and so on the device count; with eps=1e-8
Adam turns that noise into full learning-rate steps. With eps=1e-3 the comparison sees the semantics
(sharded losses, BatchNorm groups, queue groups), not that amplified noise. The learning rate is held at 1e-4:
at the recipe's 1e-3 the tiny model's first steps are chaotic enough (gradient norm ~50) that rounding
differences of 1e-7 in step 1 grow to 1e-3 by step 3. Two steps: the second starts from the parameters,
BatchNorm statistics and queue the first produced, and looks up the entries the first wrote.

The ResNet run checks BatchNorm groups that span devices, with NNS off: the entries step 1 writes are the text
embeddings of an untrained model, nearly parallel, so step 2's nearest neighbour can be decided by a similarity
gap below float rounding, and a 1e-7 difference then picks another caption, a discrete change of the NNS term
(CI once saw step 2's metrics 1.8e-4 apart while the queue and BatchNorm statistics agreed to 1e-6, the mark
of such a flip). The NN search across devices is the subject of the two ViT runs.
"""

import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
                           " --xla_cpu_collective_call_terminate_timeout_seconds=600")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from declip_jax import config as config_lib, presets, parallel, synthetic  # noqa: E402
from declip_jax.training import train_setup
from tests.tiny_config import tiny_config, tiny_resnet_config  # noqa: E402

STEPS = 2


def run(config, devices, batches):
  setup = train_setup.Setup(config, devices)
  step = setup.jit_train_step(config)
  state = setup.init_state()
  losses = []
  for b in batches:
    state, metrics = step(state, parallel.host_to_global(b, setup.mesh))
    losses.append({k: float(v) for k, v in metrics.items()})
  split = sum(1 for x in jax.tree.leaves(state.params) if "fsdp" in str(x.sharding.spec))
  return jax.device_get(state), losses, split


def max_relative_difference(a, b):
  """max |a - b| / max(|b|, 1) over all elements: relative for large values, absolute for small ones."""
  worst = 0.0
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    worst = max(worst, float(np.max(np.abs(x - y) / np.maximum(np.abs(y), 1.0))) if x.size else 0.0)
  return worst


def methods_config():
  """SLIP's losses and views plus FILIP's token-wise term in one model: SimCLR over the gathered views (its
  BatchNorm groups of 4 spanning devices), the token selection, the selected tokens' gather and the chunked
  token-wise logits (blocks of 4 of the 16 columns) against one device."""
  config = presets.use_slip(tiny_config())
  config.loss.weights.filip = 1.0
  config.loss.filip_chunk_size = 4
  return config


def sigmoid_config():
  """DeSigLIP: every DeCLIP term on the sigmoid base, CLIP+MVS and NNS around the ring of devices."""
  return presets.use_sigmoid(tiny_config())


def main():
  """argv[1]: "local" or "global" (the NN search, ViT tower, four meshes incl. FSDP), "resnet" (the ResNet
  tower on the (8, 1, 1) mesh, its BatchNorm groups of 4 examples spanning 2 devices, NNS off), "methods"
  (`methods_config`) or "sigmoid" (`sigmoid_config`), both on the (8, 1, 1) and (4, 2, 1) meshes."""
  mode = sys.argv[1] if len(sys.argv) > 1 else "local"
  assert jax.device_count() == 8, jax.devices()
  config = {"resnet": tiny_resnet_config, "methods": methods_config, "sigmoid": sigmoid_config}.get(mode, tiny_config)()
  if mode in ("resnet", "methods"):
    config.loss.weights.nns = 0.0
  config.model.image.bn_group_size = 4
  search = config.nns.search = mode if mode in ("local", "global") else "local"
  config.nns.groups = 8  # One buffer per device on the (8, 1, 1) mesh.
  config.ssl.bn_group_size = 4
  config.optim.eps = 1e-3
  config.optim.lr = config.optim.warmup_init_lr = 1e-4  # Small steps: the runs stay close enough to compare.
  ids = train_setup.Setup(config, jax.devices()[:1]).token_ids
  batches = [b for _, b in zip(range(STEPS), synthetic.batches(config, ids))]
  reference = run(config, jax.devices()[:1], batches)[:2]
  if mode in ("resnet", "methods", "sigmoid"):
    for shape in ((8, 1, 1), (4, 2, 1)) if mode in ("methods", "sigmoid") else ((8, 1, 1),):
      config.mesh.shape = shape
      report(config, shape, search, run(config, jax.devices(), batches), reference)
    return
  # FSDP: every tensor of >= 256 elements split over 8 devices. Layers unscanned, here and in its reference:
  # XLA CPU can deadlock with collectives inside a scanned loop (train_setup._refuse_cpu_deadlock).
  fsdp = config.copy_and_resolve_references()
  fsdp.model.scan_layers = False
  fsdp.mesh.fsdp_min_size = 256
  fsdp_reference = run(fsdp, jax.devices()[:1], batches)[:2]
  scanned = fsdp.copy_and_resolve_references()
  scanned.model.scan_layers, scanned.mesh.shape = True, (1, 8, 1)
  try:
    train_setup.Setup(scanned, jax.devices())
    raise AssertionError("FSDP with scanned layers on 8 CPU devices was not refused")
  except config_lib.ConfigError as e:
    assert "model.scan_layers=False" in str(e), e
  for shape in ((8, 1, 1), (4, 2, 1), (2, 2, 2), "fsdp"):
    if shape == "fsdp":
      config, (reference_state, reference_losses), shape = fsdp, fsdp_reference, (1, 8, 1)
    else:
      reference_state, reference_losses = reference
    config.mesh.shape = shape
    result = run(config, jax.devices(), batches)
    assert result[2] >= 10 or config.mesh.fsdp_min_size != 256, f"only {result[2]} parameters split over fsdp"
    report(config, shape, search, result, (reference_state, reference_losses))


def report(config, shape, search, result, reference):
  """Prints one `mesh=...` line: the largest differences of metrics and state fields from the reference."""
  (state, losses, _), (reference_state, reference_losses) = result, reference
  diffs = [max(abs(a[k] - b[k]) / max(abs(b[k]), 1.0) for k in b) for a, b in zip(losses, reference_losses)]
  fields = {f: max_relative_difference(getattr(state, f), getattr(reference_state, f))
            for f in ("params", "batch_stats", "nn_queue", "nn_queue_ptr", "opt_state")}
  tower = config.model.image.arch
  print(f"mesh={shape}{' fsdp' if config.mesh.fsdp_min_size == 256 else ''} tower={tower} search={search} "
        f"first_step_metrics={diffs[0]:.2e} metrics={max(diffs):.2e} "
        + " ".join(f"{k}={v:.2e}" for k, v in fields.items()), flush=True)


if __name__ == "__main__":
  main()
