"""Run in a fresh process (see test_accumulation.py): exact gradient accumulation against the full batch.

  python tests/accumulation_check.py DEVICES METHOD...

For each method (clip, declip, slip, filip, defilip, desiglip, declip_rn50, clip_rn50, declip_masked,
defilip_masked) trains two steps of its tiny config
on DEVICES devices (mesh (DEVICES, 1, 1)) with train.accum_steps 1 and 4 from the same initial state and batches,
and prints one line per method: the largest difference (relative above 1, absolute below) of the metrics and of
each state field. AdamW's epsilon and the learning rate are those of multidevice_check.py, for its reasons (a
zero true gradient's rounding noise would otherwise be amplified to a full step). The ResNet runs have NNS off
for the reason given there (step 2's neighbour of an untrained model can be decided below float rounding); the
ViT DeCLIP and DeFILIP runs check NNS, its lookup and enqueue.
"""

import os
import sys

DEVICES = int(sys.argv[1])
FLAGS = (os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={DEVICES}"
         " --xla_cpu_collective_call_terminate_timeout_seconds=600")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from declip_jax import presets, synthetic  # noqa: E402
from declip_jax.training import train_setup  # noqa: E402
from tests.multidevice_check import max_relative_difference, run  # noqa: E402
from tests.tiny_config import tiny_config, tiny_resnet_config  # noqa: E402

os.environ["XLA_FLAGS"] = FLAGS  # After multidevice_check's import, which sets 8; read when JAX first runs.

ACCUM_STEPS = 4
METHODS = {"clip": presets.use_clip_baseline, "declip": lambda c: c, "slip": presets.use_slip,
           "filip": presets.use_filip, "defilip": presets.use_defilip, "desiglip": presets.use_sigmoid,
           "declip_masked": lambda c: _masked(c), "defilip_masked": lambda c: _masked(presets.use_defilip(c))}


def _masked(config):
  """FLIP's patch masking at 0.5 (8 of the tiny tower's 16 patches): both passes must drop the same patches."""
  config.model.image.mask_ratio = 0.5
  config.model.filip.top_k = 4
  return config


def method_config(name: str):
  """The tiny config of `name`, batch 32: on 8 devices and 4 micro-batches, one example per device and
  micro-batch. ResNet: batch 128, micro-batches of 4 examples per device holding one BatchNorm group each (groups
  of 2 amplify rounding: the stem's gradients then differ by 1e-4 while those of groups of 4 agree to 2e-6)."""
  resnet = name.endswith("_rn50")
  config = METHODS[name.removesuffix("_rn50")](tiny_resnet_config() if resnet else tiny_config())
  config.train.batch_size = 128 if resnet else 32
  if resnet:
    config.model.image.bn_group_size = 4
    config.loss.weights.nns = 0.0
  config.nns.groups = DEVICES
  config.nns.group_size = 2 * (config.train.batch_size // DEVICES) * 2  # Two steps of both text views.
  config.ssl.bn_group_size = 4
  config.optim.eps = 1e-3
  config.optim.lr = config.optim.warmup_init_lr = 1e-4
  config.mesh.shape = (DEVICES, 1, 1)
  return config


def main():
  assert jax.device_count() == DEVICES, jax.devices()
  for name in sys.argv[2:]:
    config = method_config(name)
    ids = train_setup.Setup(config).token_ids
    batches = [b for _, b in zip(range(2), synthetic.batches(config, ids))]
    full_state, full_metrics, _ = run(config, jax.devices(), batches)
    config.train.accum_steps = ACCUM_STEPS
    state, metrics, _ = run(config, jax.devices(), batches)
    diffs = max(abs(a[k] - b[k]) / max(abs(b[k]), 1.0) for a, b in zip(metrics, full_metrics) for k in b)
    fields = {f: max_relative_difference(getattr(state, f), getattr(full_state, f))
              for f in ("params", "batch_stats", "nn_queue", "nn_queue_ptr", "opt_state")}
    assert set(metrics[0]) == set(full_metrics[0])
    print(f"method={name} devices={DEVICES} accum_steps={ACCUM_STEPS} metrics={diffs:.2e} "
          + " ".join(f"{k}={v:.2e}" for k, v in fields.items()), flush=True)


if __name__ == "__main__":
  main()
