"""DeSigLIP on the demo's model, data and schedule: configs/demo.py (DeCLIP) on the sigmoid base, as
configs/desiglip_vit_b32.py.

Run:
  python -m declip_jax.main --config=configs/desiglip_demo.py --workdir=/tmp/desiglip_demo
"""

from configs import demo
from declip_jax import presets


def get_config():
  return presets.use_sigmoid(demo.get_config())
