"""`python -m declip_jax.study`: see declip_jax/study/run_grid.py."""

from declip_jax.study import run_grid

if __name__ == "__main__":
  run_grid.run()
