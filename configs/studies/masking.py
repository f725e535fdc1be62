"""The masking study (issue 33): FLIP's patch masking at ratio 0.5, followed by unmasked tuning, against no
masking, for CLIP and DeCLIP on the demo model, at equal steps and at equal compute, on 500 and 2,000 built-in
pairs with the data-efficiency study's caption noise, schedule and seeds.

Run:
  python -m declip_jax.study --study=configs/studies/masking.py --parallel=2

36 runs of configs/demo.py; the unmasked `clip` and `declip` rows are the data-efficiency study's runs (the same
overrides and names: reused from docs/studies/data_efficiency/runs/). The masked methods:
- `<method>-mask50`: 1,500 steps as the unmasked runs, every image view keeping 8 of its 16 patches, the last 10%
  of the steps (150) unmasked: FLIP's unmasked tuning, here on the same cosine schedule's tail.
- `<method>-mask50-eqc`: as many steps as the unmasked run's model FLOPs buy (declip_jax.aot.flops.train_step on
  the demo config: a masked CLIP step costs 3.031 GFLOP against 3.999 unmasked, a masked DeCLIP step 6.500
  against 8.435, since the demo's text tower costs as much as its image tower). With 10% of the steps unmasked,
  CLIP: 1,500 / (0.9 x 0.758 + 0.1) = 1,918 steps; DeCLIP: 1,500 / (0.9 x 0.771 + 0.1) = 1,890 steps.
"""

from configs.studies import data_efficiency, methods

MASK = (("model.image.mask_ratio", 0.5), ("model.image.unmasked_final_fraction", 0.1))
CLIP_EQUAL_COMPUTE_STEPS = 1918
DECLIP_EQUAL_COMPUTE_STEPS = 1890


def _longer(steps: int) -> tuple:
  """Overrides that train `steps` steps, evaluated (and checkpointed) at the end."""
  return (("train.num_steps", steps), ("eval.every_steps", steps), ("checkpoint.every_steps", steps))


METHODS = {
    "clip": data_efficiency.CLIP,
    "clip-mask50": data_efficiency.CLIP + MASK,
    "clip-mask50-eqc": data_efficiency.CLIP + MASK + _longer(CLIP_EQUAL_COMPUTE_STEPS),
    "declip": (),
    "declip-mask50": MASK,
    "declip-mask50-eqc": MASK + _longer(DECLIP_EQUAL_COMPUTE_STEPS),
}


def get_config():
  s = methods.get_config()  # Its base, overrides, noise, seeds, panels and sizes (500 and 2,000).
  del s["summary"]  # The methods' README table.
  s.methods = tuple(METHODS.items())  # In the table's and the plot's order.
  # Masked minus unmasked on the same seed (docs/studies/masking/paired.md): (label, method, baseline).
  s.paired = (("CLIP, equal steps", "clip-mask50", "clip"), ("CLIP, equal compute", "clip-mask50-eqc", "clip"),
              ("DeCLIP, equal steps", "declip-mask50", "declip"),
              ("DeCLIP, equal compute", "declip-mask50-eqc", "declip"))
  return s
