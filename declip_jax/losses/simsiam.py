"""SimSiam image self-supervision (ISS)."""

import jax
import jax.numpy as jnp


def negative_cosine(p: jax.Array, z: jax.Array, eps: float = 1e-8) -> jax.Array:
  """-mean_i cos(p_i, stop_gradient(z_i)) for p, z: [B, F] -> scalar."""
  z = jax.lax.stop_gradient(z)
  dot = jnp.sum(p * z, axis=-1)
  norms = jnp.maximum(jnp.linalg.norm(p, axis=-1) * jnp.linalg.norm(z, axis=-1), eps)
  return -jnp.mean(dot / norms)


def simsiam_loss(p1: jax.Array, z1: jax.Array, p2: jax.Array, z2: jax.Array) -> jax.Array:
  """-1/2 [cos(p1, sg(z2)) + cos(p2, sg(z1))], batch mean; all inputs [B, F]."""
  return 0.5 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))
