"""XLA's CPU matmul paths on this host: each XLA_FLAGS variant's float32 matmul rate and CLIP ViT-B/32 train step,
beside torch's matmul. One subprocess per variant (XLA reads its flags once, at start).

  python benchmarks/cpu_matmul_paths.py [--batch=32] [--steps=3] [--size=4096]

Variants: XLA's default (Eigen, or whatever this jaxlib routes dots to), XNNPACK, oneDNN and YNNPACK dot
fusions, single-threaded Eigen (for the CPU/wall comparison). Each row: GFLOP/s of a jitted [size, size] f32
matmul (best of 5), the median B/32 CLIP step (synthetic batch), and the process's CPU time / wall time over it.
"""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

_BATCH = flags.DEFINE_integer("batch", 32, "CLIP ViT-B/32 batch.")
_STEPS = flags.DEFINE_integer("steps", 3, "Timed steps per variant.")
_SIZE = flags.DEFINE_integer("size", 4096, "Matmul side.")

VARIANTS = {
    "default": "",
    "xnnpack dots": "--xla_cpu_experimental_xnn_fusion_type=dot",
    "onednn dots": "--xla_cpu_experimental_onednn_fusion_type=dot",
    "ynnpack dots": "--xla_cpu_experimental_ynn_fusion_type=dot",
    "eigen single-threaded": "--xla_cpu_multi_thread_eigen=false",
}

_CHILD = r"""
import json, statistics, sys, time
sys.path.insert(0, sys.argv[1])
import jax
from declip_jax import host_info
from configs import clip_vit_b32
from declip_jax import parallel, synthetic
from declip_jax.training import train_setup
size, batch, steps = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
gflops = host_info.matmul_tflops(size, "float32") * 1e3
config = clip_vit_b32.get_config()
config.data.source, config.data.tokenizer, config.train.batch_size = "builtin", "word", batch
setup = train_setup.Setup(config)
step = setup.jit_train_step(config)
state = setup.init_state()
b = parallel.host_to_global(synthetic.batch(config, setup.token_ids), setup.mesh)
state, m = step(state, b); jax.block_until_ready(m)
times, timer = [], host_info.CpuTimer()
for _ in range(steps):
  t = time.perf_counter(); state, m = step(state, b); jax.block_until_ready(m); times.append(time.perf_counter() - t)
print(json.dumps({"gflops": gflops, "step_s": statistics.median(times), "cpu_per_wall": timer.ratio(),
                  "loss": float(m["loss"])}))
"""


def torch_gflops(size: int) -> float | None:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  import time  # pylint: disable=g-import-not-at-top
  a = torch.randn(size, size)
  a @ a
  best = float("inf")
  for _ in range(5):
    t = time.perf_counter()
    a @ a
    best = min(best, time.perf_counter() - t)
  return 2 * size**3 / best / 1e9


def main(_):
  from declip_jax import host_info  # pylint: disable=g-import-not-at-top
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  print(f"host: {host_info.describe()}")
  print(f"| XLA CPU variant | XLA_FLAGS | f32 {_SIZE.value}^2 matmul GFLOP/s | CLIP ViT-B/32 step, batch "
        f"{_BATCH.value} | CPU/wall | loss after 1+N steps |")
  print("|---|---|---|---|---|---|", flush=True)
  for name, xla_flags in VARIANTS.items():
    env = {**os.environ, "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " " + xla_flags).strip(),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-c", _CHILD, repo, str(_SIZE.value), str(_BATCH.value), str(_STEPS.value)],
                         capture_output=True, text=True, env=env, timeout=1800)
    if out.returncode:
      print(f"| {name} | `{xla_flags}` | failed: {out.stderr.strip().splitlines()[-1][:120]} | | | |", flush=True)
      continue
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"| {name} | `{xla_flags or '(none)'}` | {r['gflops']:.0f} | {r['step_s']:.2f} s | {r['cpu_per_wall']:.2f} | "
          f"{r['loss']:.6f} |", flush=True)
  t = torch_gflops(_SIZE.value)
  if t is not None:
    import torch  # pylint: disable=g-import-not-at-top
    print(f"| torch {torch.__version__} matmul ({torch.get_num_threads()} threads) | | {t:.0f} | | | |")


if __name__ == "__main__":
  app.run(main)
