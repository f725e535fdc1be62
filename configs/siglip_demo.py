"""SigLIP on the demo's model, data and schedule (configs/demo.py): the CLIP baseline of configs/clip_demo.py
with the sigmoid loss and Adam's beta2 0.95, as configs/siglip_vit_b32.py, on the built-in data.

Run:
  python -m declip_jax.main --config=configs/siglip_demo.py --workdir=/tmp/siglip_demo
"""

from configs import clip_demo
from declip_jax import presets


def get_config():
  c = presets.use_sigmoid(clip_demo.get_config())
  c.optim.b2 = 0.95
  return c
