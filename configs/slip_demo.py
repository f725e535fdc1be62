"""SLIP on the demo's model, data and schedule (configs/demo.py): the method's losses and views
(presets.use_slip) with the demo's sizes, learning rate and weight decay, so that the five methods of the
official benchmark compare on equal terms on the built-in data.

Run:
  python -m declip_jax.main --config=configs/slip_demo.py --workdir=/tmp/slip_demo
"""

from configs import demo
from declip_jax import config as config_lib, presets


def get_config():
  c = presets.use_slip(demo.demo_sizes(config_lib.base_config()))
  return c
