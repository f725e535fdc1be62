"""The ablation study (issue 16), the paper's shape: CLIP; CLIP + each of ISS, TSS, MVS, NNS alone; DeCLIP minus
each; DeCLIP. 500 built-in pairs with the data-efficiency study's caption noise, 3 seeds, on the demo model.

Run:
  python -m declip_jax.study --study=configs/studies/ablation.py --parallel=1

30 runs of configs/demo.py at the demo's 1,500 steps and batch 128 (384 passes over the 500 pairs), the data-efficiency
study's schedule: its `clip` and `declip` rows are that study's 500-pair runs (the same overrides and run names: the
runner reuses those six records from docs/studies/data_efficiency/runs/). 500 steps, tried first, was too short:
DeCLIP's lead over CLIP comes after CLIP has memorised the pairs (docs/results.md). --parallel=1: on 2 cores a second
process gains about 10% (each one's threads want both cores) and a study cut short leaves two runs half done instead of
one.

How a term is added to or taken from the recipe (every weight is DeCLIP's: 0.4 on the CLIP term, 0.2 on each
other term; AdamW makes the overall scale immaterial, so the CLIP row's single term at the baseline's 1.0 is the
same training as at 0.4):
- ISS: SimSiam between two MoCo-v2 views of the image (`data.num_image_views=2`). Added to CLIP alone, the CLIP
  term stays on the first view only (`loss.mvs_mode="paper"` with `loss.weights.mvs=0`).
- TSS: masked language modelling; the caption the CLIP term sees is then the masked one, as in DeCLIP.
- MVS: the CLIP term averaged over the 2 x 2 (image view, text view) pairs, which needs the second (MoCo-v2)
  image view and the EDA caption. DeCLIP minus MVS keeps both views for ISS and NNS and scores only (view 1,
  caption) in the CLIP term (`loss.mvs_mode="paper"`, `loss.weights.mvs=0`).
- NNS: the queue neighbour of each caption view as an extra positive for each image view.
CLIP is the official baseline (one view, RandomResizedCrop(0.5-1) only, the plain caption), as
presets.use_clip_baseline and configs/studies/data_efficiency.py. The control row `clip+mocov2` is CLIP on one
MoCo-v2 view (the views' augmentation, no second view, no other term): the ISS and MVS rows' CLIP term sees such
views, so their gain over CLIP is the term's only where it exceeds this row's.
"""

import ml_collections

from configs.studies import data_efficiency

_CLIP_TERM_ONLY = (("loss.weights.clip_mvs", 0.4), ("loss.weights.iss", 0.0), ("loss.weights.tss", 0.0),
                   ("loss.weights.nns", 0.0))
_MOCO_V2_VIEW = (("data.augment.recipe", "moco_v2"), ("data.augment.crop_scale", (0.35, 1.0)))
_TWO_IMAGE_VIEWS = (("data.num_image_views", 2),) + _MOCO_V2_VIEW
_FIRST_PAIR_ONLY = (("loss.mvs_mode", "paper"), ("loss.weights.mvs", 0.0))


def _with(base, *changes):
  """`base` overrides with `changes` applied: later pairs replace earlier ones of the same key."""
  merged = dict(base)
  for change in changes:
    merged.update(dict(change))
  return tuple(merged.items())


_CLIP_AT_DECLIP_WEIGHT = _with(data_efficiency.CLIP, _CLIP_TERM_ONLY)  # The base of the "clip+<term>" rows.
METHODS = {  # In the table's and the plot's order.
    "clip": data_efficiency.CLIP,
    "clip+mocov2": _with(_CLIP_AT_DECLIP_WEIGHT, _MOCO_V2_VIEW),
    "clip+iss": _with(_CLIP_AT_DECLIP_WEIGHT, _TWO_IMAGE_VIEWS, _FIRST_PAIR_ONLY, (("loss.weights.iss", 0.2),)),
    "clip+tss": _with(_CLIP_AT_DECLIP_WEIGHT, (("loss.weights.tss", 0.2),)),
    "clip+mvs": _with(_CLIP_AT_DECLIP_WEIGHT, _TWO_IMAGE_VIEWS, (("data.eda", True),)),
    "clip+nns": _with(_CLIP_AT_DECLIP_WEIGHT, (("loss.weights.nns", 0.2),)),
    "declip-iss": (("loss.weights.iss", 0.0),),
    "declip-tss": (("loss.weights.tss", 0.0),),
    "declip-mvs": _FIRST_PAIR_ONLY,
    "declip-nns": (("loss.weights.nns", 0.0),),
    "declip": (),
}


def get_config():
  s = ml_collections.ConfigDict()
  s.base = "configs/demo.py"
  s.overrides = data_efficiency.get_config().overrides  # The demo's 1,500 steps, as the data-efficiency study.
  s.methods = tuple(METHODS.items())
  s.num_train = (500,)
  s.noise = ml_collections.ConfigDict({"noisy": data_efficiency.NOISY})
  s.seeds = (0, 1, 2)
  s.plot = data_efficiency.get_config().plot
  return s
