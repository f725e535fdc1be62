"""`python -m declip_jax.aot`: see declip_jax/aot/ladder.py."""

from declip_jax.aot import ladder

if __name__ == "__main__":
  ladder.run()
