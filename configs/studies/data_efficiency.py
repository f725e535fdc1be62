"""The data-efficiency study (issue 16): CLIP vs DeCLIP on the demo model at equal steps and batch, on 500,
2,000 and 20,000 built-in pairs with web-like caption noise, 3 seeds each.

Run:
  python -m declip_jax.study --study=configs/studies/data_efficiency.py --parallel=1

18 runs of configs/demo.py (1,500 steps at batch 128 each): 76 min in all at --parallel=2 on 2 CPU cores. The noise:
20% of the training captions name only some attributes, 10% a wrong shape or colour, 20% are unrelated
(alt-text or another image's caption); the held-out split is clean.
"""

import ml_collections

# presets.use_clip_baseline as overrides of configs/demo.py.
CLIP = (("loss.weights.clip_mvs", 1.0), ("loss.weights.iss", 0.0), ("loss.weights.tss", 0.0),
        ("loss.weights.nns", 0.0), ("data.num_image_views", 1), ("data.eda", False), ("data.augment.recipe", "crop"),
        ("data.augment.crop_scale", (0.5, 1.0)))
NOISY = {"partial": 0.2, "wrong": 0.1, "unrelated": 0.2}


def get_config():
  s = ml_collections.ConfigDict()
  s.base = "configs/demo.py"
  # Evaluations at the last step only (the demo's also at step 750): a run costs what its training costs.
  s.overrides = (("checkpoint.every_steps", 750), ("eval.every_steps", 1500))
  s.methods = ml_collections.ConfigDict({"clip": CLIP, "declip": ()})
  s.num_train = (500, 2000, 20_000)
  s.noise = ml_collections.ConfigDict({"noisy": NOISY})
  s.seeds = (0, 1, 2)
  s.plot = (("zero-shot shape", "zero_shot_shape/zero_shot_top1"),  # (title, metric) pairs: kept in this order.
            ("zero-shot colour", "zero_shot_colour/zero_shot_top1"),
            ("linear probe, shape", "linear_probe_shape/linear_probe_top1"))
  return s
