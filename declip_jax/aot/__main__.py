"""`python -m declip_jax.aot`: see declip_jax/aot/cli.py."""

from declip_jax.aot import cli

if __name__ == "__main__":
  cli.run()
