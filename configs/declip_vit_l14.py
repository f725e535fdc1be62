"""DeCLIP ViT-L/14: the official ViT-B/32 recipe (configs/declip_vit_b32.py) with ViT-L/14 towers (CLIP's sizes).

Run:
  python -m declip_jax.main --config=configs/declip_vit_l14.py --workdir=gs://BUCKET/declip_vit_l14

Changed from the recipe: both towers rematerialise every layer (`remat="full"`), with the layers in a loop
(`scan_unroll=1`). At the recipe's 128 images per device in float32 without remat, the step needs over 228 GiB per
device (libtpu), more than any TPU chip or GPU has; with it, 31.1 GiB on v5p (95.7 GiB per chip), at ~1/3 more
compute and the same numerics. 16-GiB chips (v4, v5e) need more still:
`python -m declip_jax.aot --config=configs/declip_vit_l14.py --target=tpu:v5e:4x8` says what.
"""

from configs import declip_vit_b32
from declip_jax import presets


def get_config():
  c = presets.set_architecture(declip_vit_b32.get_config(), "ViT-L/14")
  c.model.image.remat = c.model.text.remat = "full"
  c.model.scan_unroll = 1  # Remat keeps the layers in a loop (docs/design.md §21): 21.3 GiB per H100, not 67.5.
  return c
