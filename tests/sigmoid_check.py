"""Run with 8 virtual CPU devices (tests/test_losses_sigmoid.py): the sigmoid loss's value and gradients on
meshes (8,1,1) and (4,2,1), ring and gathered, equal the unsharded computation; and compiled at a global batch
of 4,096 on 8 devices, the ring's program has no [512, 4096] array (the gathered one's has)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from declip_jax.losses import sigmoid  # noqa: E402
from declip_jax.losses.contrastive import BATCH_AXES  # noqa: E402


def value_and_grads(mesh, implementation, x, y, t, b):
  loss = lambda x, y, t, b: sigmoid.sigmoid_loss(x, y, t, b, mesh, implementation=implementation,
                                                 chunk=5 if implementation == "gathered" else None)
  if mesh is not None:
    rows = NamedSharding(mesh, P(BATCH_AXES))
    x, y = jax.device_put(x, rows), jax.device_put(y, rows)
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3)))(x, y, t, b)


def main():
  assert jax.device_count() == 8, jax.devices()
  rng = np.random.default_rng(0)
  unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)
  x = jnp.asarray(unit(rng.normal(size=(32, 16))), jnp.float32)
  y = jnp.asarray(unit(rng.normal(size=(32, 16))), jnp.float32)
  t, b = jnp.float32(4.0), jnp.float32(-2.0)  # Not the initial values: every term matters.
  want_loss, want_grads = value_and_grads(None, "gathered", x, y, t, b)
  for shape in ((8, 1, 1), (4, 2, 1)):
    mesh = jax.make_mesh(shape, ("data", "fsdp", "model"))
    for implementation in sigmoid.IMPLEMENTATIONS:
      loss, grads = value_and_grads(mesh, implementation, x, y, t, b)
      np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
      for got, want in zip(grads, want_grads):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
      print(f"mesh={shape} {implementation}: loss {float(loss):.6f} and gradients agree with one device")

  mesh = jax.make_mesh((8, 1, 1), ("data", "fsdp", "model"))
  rows = NamedSharding(mesh, P(BATCH_AXES))
  spec = jax.ShapeDtypeStruct((4096, 512), jnp.float32, sharding=rows)
  scalar = jax.ShapeDtypeStruct((), jnp.float32)
  texts = {}
  for implementation in sigmoid.IMPLEMENTATIONS:
    loss = lambda x, y, t, b, i=implementation: sigmoid.sigmoid_loss(x, y, t, b, mesh, implementation=i)
    compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3))).lower(spec, spec, scalar, scalar).compile()
    texts[implementation] = compiled.as_text()
    memory = compiled.memory_analysis()
    print(f"{implementation}: temporaries {memory.temp_size_in_bytes / 2**20:.1f} MiB per device")
  assert "[512,4096]" in texts["gathered"] and "[512,512]" in texts["ring"]
  assert "[512,4096]" not in texts["ring"] and "[4096,512]" not in texts["ring"]  # No gathered texts either.
  assert all("[4096,4096]" not in text for text in texts.values())
  print("ring holds no [512, 4096] logits; gathered does")


if __name__ == "__main__":
  main()
