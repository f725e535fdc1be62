"""`python -m declip_jax.study`: see declip_jax/study/runner.py."""

from declip_jax.study import runner

if __name__ == "__main__":
  runner.run()
