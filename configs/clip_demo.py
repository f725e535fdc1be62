"""The CLIP baseline of configs/demo.py: InfoNCE only, one RandomResizedCrop view, the plain caption.

Run:
  python -m declip_jax.main --config=configs/clip_demo.py --workdir=/tmp/clip_demo
"""

from configs import demo
from declip_jax import config as config_lib, presets


def get_config():
  return presets.use_clip_baseline(demo.demo_sizes(config_lib.base_config()))
