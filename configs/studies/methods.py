"""The official benchmark's five methods and the two on the sigmoid base, on the demo model (issues 24, 25, 34):
CLIP, SLIP, FILIP, DeCLIP, DeFILIP, SigLIP and DeSigLIP at 500 and 2,000 built-in pairs with the data-efficiency
study's caption noise, schedule and seeds.

Run:
  python -m declip_jax.study --study=configs/studies/methods.py --parallel=1
  python -m declip_jax.study --study=configs/studies/methods.py --only=-n500-noisy-s0   (one seed at 500 first)

42 runs of configs/demo.py (1,500 steps at batch 128); the `clip` and `declip` rows are the data-efficiency
study's runs (the same overrides and run names: reused from docs/studies/data_efficiency/runs/). Each method is
presets.use_slip / use_filip / use_defilip / use_sigmoid written as overrides of the demo, as its demo config
(configs/<method>_demo.py) has them: the demo's learning rate and weight decay for all seven (equal terms), and
SigLIP with the paper's Adam beta2 of 0.95 as configs/siglip_demo.py; the sigmoid's temperature and bias start
where the paper starts them (t = 10, b = -10); FILIP's zero-shot evaluations use its token-wise classifier and it has no
retrieval evaluation (its global heads stay untrained: config.token_wise_evals).
"""

import math

import ml_collections

from configs.studies import data_efficiency

SLIP = (("loss.weights.clip_mvs", 1.0), ("loss.weights.iss", 0.0), ("loss.weights.tss", 0.0),
        ("loss.weights.nns", 0.0), ("loss.weights.simclr", 1.0), ("data.num_image_views", 3), ("data.eda", False),
        ("data.augment.first_view", "crop"), ("data.augment.first_view_crop_scale", (0.5, 1.0)))
FILIP = (("loss.weights.clip_mvs", 0.0), ("loss.weights.iss", 0.0), ("loss.weights.tss", 0.0),
         ("loss.weights.nns", 0.0), ("loss.weights.filip", 1.0), ("data.num_image_views", 1), ("data.eda", False),
         ("data.mask_captions", True), ("evals.zero_shot_colour.token_wise", True),
         ("evals.zero_shot_shape.token_wise", True), ("evals.retrieval.enabled", False))
DEFILIP = (("loss.weights.filip", 0.2),)
SIGMOID = (("loss.contrastive", "sigmoid"), ("model.logit_scale.init", math.log(10.0)),
           ("model.logit_scale.min", -math.inf), ("model.logit_scale.max", math.inf),
           ("model.logit_scale.cap", math.inf), ("model.logit_bias_init", -10.0))
SIGLIP = data_efficiency.CLIP + SIGMOID + (("optim.b2", 0.95),)
METHODS = {"clip": data_efficiency.CLIP, "slip": SLIP, "filip": FILIP, "declip": (), "defilip": DEFILIP,
           "siglip": SIGLIP, "desiglip": SIGMOID}


def get_config():
  base = data_efficiency.get_config()
  s = ml_collections.ConfigDict()
  s.base, s.overrides, s.noise, s.seeds, s.plot = base.base, base.overrides, base.noise, base.seeds, base.plot
  s.methods = tuple(METHODS.items())  # In the table's and the plot's order.
  s.num_train = (500, 2000)
  # The README's table (docs/studies/methods/summary.md): zero-shot shape / linear probe, each method a column.
  s.summary = ml_collections.ConfigDict()
  s.summary.names = (("clip", "CLIP"), ("slip", "SLIP"), ("filip", "FILIP"), ("declip", "DeCLIP"),
                     ("defilip", "DeFILIP"), ("siglip", "SigLIP"), ("desiglip", "DeSigLIP"))
  s.summary.metrics = ("zero_shot_shape/zero_shot_top1", "linear_probe_shape/linear_probe_top1")
  return s
