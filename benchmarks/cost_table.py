"""The cost of the recipe's pretraining per method, counted from the configs: model FLOPs per image, and H100
hours for YFCC-15M x 32 epochs as a compute bound and at 40% MFU (docs/performance.md).

  python benchmarks/cost_table.py [--images=480e6] [--mfu=0.4]

FLOPs come from declip_jax/aot/flops.py (matmuls, forward x 3, at the recipe's global batch of 4,096, divided by
it). The bound is FLOPs / the H100 SXM's dense bf16 peak (989 TFLOP/s): no real step is faster. "At 40% MFU" is a
planning figure: MFU = model FLOPs / (time x peak), and 40% is what well-tuned transformer training reaches on
H100s, not something measured here. Gradient accumulation is left out (it adds the towers' forward, see the
executed column of aot/flops.py); masking rows assume every step masked (FLIP's unmasked tuning phase adds its
share of unmasked steps), and low-resolution or short-caption rows every step at that size (CLIPA's fine-tuning
at full size adds its share). These are estimates until a device measures one.
"""

import argparse
import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from declip_jax.aot import flops, ladder  # noqa: E402

METHODS = (("CLIP", "clip_vit_b32"), ("SLIP", "slip_vit_b32"), ("FILIP", "filip_vit_b32"),
           ("DeCLIP", "declip_vit_b32"), ("DeFILIP", "defilip_vit_b32"), ("SigLIP", "siglip_vit_b32"),
           ("DeSigLIP", "desiglip_vit_b32"))
MASK_50, MASK_75 = {"model.image.mask_ratio": 0.5}, {"model.image.mask_ratio": 0.75}
# Captions cut to 32 tokens (CLIPA's truncation), from the recipe's 77.
PX_128, TOKENS_32 = {"model.image.image_size": 128}, {"model.text.context_length": 32}
CHEAPER = (("patch mask 0.5", MASK_50), ("patch mask 0.75", MASK_75), ("128 px", PX_128),
           ("128 px + patch mask 0.5", {**PX_128, **MASK_50}), ("32-token captions", TOKENS_32),
           ("patch mask 0.5 + 32-token captions", {**MASK_50, **TOKENS_32}),
           ("128 px + patch mask 0.5 + 32-token captions", {**PX_128, **MASK_50, **TOKENS_32}))
H100_BF16_TFLOPS = flops.PEAK_BF16_TFLOPS["H100 SXM"]


def per_image_gflop(config) -> float:
  return flops.train_step(config)["total"] / config.train.batch_size / 1e9


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--images", type=float, default=15e6 * 32, help="images seen (YFCC-15M x 32 epochs)")
  parser.add_argument("--mfu", type=float, default=0.4)
  args = parser.parse_args()
  print(f"{args.images / 1e6:.0f}M images (YFCC-15M x 32 epochs), ViT-B/32 at 224 px, global batch 4,096; H100 SXM "
        f"dense bf16 peak {H100_BF16_TFLOPS:.0f} TFLOP/s")
  print(f"| method | images | model GFLOP per image | vs CLIP | H100-hours, compute bound | H100-hours at "
        f"{args.mfu:.0%} MFU |")
  print("|---|---|---:|---:|---:|---:|")
  clip = None
  for method, module in METHODS:
    config = importlib.import_module(f"configs.{module}").get_config()
    rows = [("full (224 px, unmasked)", config)]
    if method in ("CLIP", "DeCLIP"):
      rows += [(label, ladder.apply_overrides(config, changes)) for label, changes in CHEAPER]
    for label, c in rows:
      gflop = per_image_gflop(c)
      clip = clip or gflop
      bound = args.images * gflop * 1e9 / (H100_BF16_TFLOPS * 1e12) / 3600
      print(f"| {method} | {label} | {gflop:.1f} | {gflop / clip:.2f}x | {bound:.1f} | {bound / args.mfu:.1f} |")


if __name__ == "__main__":
  main()
