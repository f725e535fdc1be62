"""FILIP on the demo's model, data and schedule (configs/demo.py): the method's losses and views
(presets.use_filip) with the demo's sizes, learning rate and weight decay, so that the five methods of the
official benchmark compare on equal terms on the built-in data.

Run:
  python -m declip_jax.main --config=configs/filip_demo.py --workdir=/tmp/filip_demo
"""

from configs import demo
from declip_jax import config as config_lib, presets


def get_config():
  c = presets.use_filip(demo.demo_sizes(config_lib.base_config()))
  c.evals = config_lib.token_wise_evals(c.evals)  # Zero-shot with FILIP's token-wise classifier.
  return c
