"""The demo claims of docs/results.md, end to end (slow: about 6 minutes on 2 cores; run with `pytest -m slow`)."""

import pytest

from configs import demo
from declip_jax import train


@pytest.mark.slow
def test_demo_learns_every_term_and_beats_three_times_chance(tmp_path):
  out = train.run(demo.get_config(), str(tmp_path))
  for name, values in out["loss_summary"].items():
    assert values["final"] < values["first_10pct_mean"], name
  for name, result in out["eval"].items():
    if name.startswith("zero_shot_"):
      assert result["metrics"]["zero_shot_top1"] >= 3.0 / result["num_classes"], name
  assert out["eval"]["retrieval"]["metrics"]["i2t_recall@10"] > 10 / 1000
