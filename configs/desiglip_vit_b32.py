"""DeSigLIP ViT-B/32: DeCLIP (configs/declip_vit_b32.py, the official YFCC-15M recipe) on SigLIP's sigmoid base
(presets.use_sigmoid; docs/design.md §19).

- CLIP + MVS: each of the 2 image views x 2 text views pairs is a sigmoid term over the global batch (positives
  on the pairs), their mean weighted 0.4 as DeCLIP's InfoNCE mean is.
- NNS: image i's positive is its own text's nearest neighbour in the queue, and its negatives are the other
  images' neighbours in the global batch: the columns DeCLIP's softmax NNS term normalises over. A sigmoid term
  has no direction, so scoring images against the neighbours alone keeps DeCLIP's image-to-text-only form.
- ISS (SimSiam) and TSS (MLM) are unchanged; the weights stay 0.4 / 0.2 / 0.2 / 0.2.
- The temperature t = exp(t') starts at 10 and the bias at -10, both learned and shared by every sigmoid term
  (the paper's initialisation). The optimiser is DeCLIP's (beta2 0.98), so that only the base term changes.

Run:
  python -m declip_jax.main --config=configs/desiglip_vit_b32.py --workdir=gs://BUCKET/desiglip_vit_b32
"""

from configs import declip_vit_b32
from declip_jax import presets


def get_config():
  return presets.use_sigmoid(declip_vit_b32.get_config())
