"""SLIP RN50: configs/slip_vit_b32.py with CLIP's ModifiedResNet-50 image tower (embedding 1,024; BatchNorm over
groups of 4,096 as configs/declip_rn50.py). The SimCLR head reads the last stage's feature map averaged over
positions (2,048): the official code cannot run SLIP RN50 (its ModifiedResNet.forward has no `return_feature`);
this is the feature SimCLR itself uses. Reported (official table): 28.5% ImageNet zero-shot.

Run:
  python -m declip_jax.main --config=configs/slip_rn50.py --workdir=gs://BUCKET/slip_rn50
"""

from configs import slip_vit_b32
from declip_jax import presets


def get_config():
  return presets.set_architecture(slip_vit_b32.get_config(), "RN50")
