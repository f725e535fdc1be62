"""NNS with a queue smaller than the data (issue 16, item 4): on 500 pairs the demo's buffers (2,048 slots,
1,024 pairs with two text views) hold each pair's own caption for 87% of lookups
(`nn_queue.own_pair_fraction`), so NNS mostly repeats the CLIP term. This study runs DeCLIP and CLIP + NNS with
the demo's queue and with 64-slot buffers (own caption in 6% / 12% of lookups), on the ablation study's data,
schedule and seeds.

Run (the 2,048-slot runs are the ablation study's, reused from its records):
  python -m declip_jax.study --study=configs/studies/nn_queue_size.py --parallel=1
"""

from configs.studies import ablation

SMALL_QUEUE = (("nns.group_size", 64),)


def get_config():
  s = ablation.get_config()
  s.methods = (("clip+nns", ablation.METHODS["clip+nns"]),
               ("clip+nns-queue64", ablation.METHODS["clip+nns"] + SMALL_QUEUE),
               ("declip", ablation.METHODS["declip"]),
               ("declip-queue64", ablation.METHODS["declip"] + SMALL_QUEUE))
  return s
