"""`python -m declip_jax.plan`: see declip_jax/plan/cli.py."""

from declip_jax.plan import cli

if __name__ == "__main__":
  cli.run()
