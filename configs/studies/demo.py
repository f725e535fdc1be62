"""The demo's results as records: configs/demo.py (DeCLIP) and its CLIP baseline (configs/clip_demo.py, here as
the same overrides of the demo that the other studies use), 1,500 steps at batch 128 on the built-in 20,000 clean
pairs, seed 0, evaluated at steps 750 and 1,500 as the demo is. docs/results.md's demo table is its results.md.

Run:
  python -m declip_jax.study --study=configs/studies/demo.py --parallel=1

2 runs: about 6 min (DeCLIP) and 3 min (CLIP) on 2 AMD EPYC cores with AVX-512.
"""

import ml_collections

from configs.studies import data_efficiency


def get_config():
  s = ml_collections.ConfigDict()
  s.base = "configs/demo.py"
  s.overrides = ()  # The demo's own schedule, checkpoints and evaluations.
  s.methods = ml_collections.ConfigDict({"declip": (), "clip": data_efficiency.CLIP})
  s.num_train = (20_000,)  # The demo's.
  s.noise = ml_collections.ConfigDict({"clean": ml_collections.ConfigDict()})
  s.seeds = (0,)
  s.plot = (("zero-shot colour", "zero_shot_colour/zero_shot_top1"),
            ("zero-shot shape", "zero_shot_shape/zero_shot_top1"),
            ("zero-shot shape top-5", "zero_shot_shape/zero_shot_top5"),
            ("image->text R@1", "retrieval/i2t_recall@1"), ("image->text R@5", "retrieval/i2t_recall@5"),
            ("image->text R@10", "retrieval/i2t_recall@10"), ("text->image R@1", "retrieval/t2i_recall@1"),
            ("text->image R@5", "retrieval/t2i_recall@5"), ("text->image R@10", "retrieval/t2i_recall@10"),
            ("linear probe, shape", "linear_probe_shape/linear_probe_top1"))
  return s
