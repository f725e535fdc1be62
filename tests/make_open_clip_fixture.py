"""Writes tests/data/open_clip_parity.npz, the torch side of tests/test_open_clip_parity.py: for each reduced
architecture of tests/open_clip_cases.py, a random open_clip model's weights (its state dict, float32), the
inputs, and open_clip's own embeddings of them. Needs torch and open_clip (requirements-interop.txt):

  python -m tests.make_open_clip_fixture

The models are the ones tests/test_interop.py builds (same seeds), so that test and the fixture agree.
"""

import numpy as np
import open_clip
import torch

from tests.conftest import REPO
from tests.open_clip_cases import ARCHITECTURES, inputs, reduced_config
from tests.test_interop import _open_clip_embeddings, _random_open_clip

FIXTURE = REPO / "tests" / "data" / "open_clip_parity.npz"


def main():
  arrays = {"torch_version": np.array(torch.__version__), "open_clip_version": np.array(open_clip.__version__)}
  for name in sorted(ARCHITECTURES):
    config = reduced_config(**ARCHITECTURES[name])
    model = _random_open_clip(config, seed=0)
    images, tokens, _ = inputs(config, seed=1)
    image_embedding, text_embedding = _open_clip_embeddings(model, images, tokens)
    arrays.update({f"{name}/images": images, f"{name}/tokens": tokens, f"{name}/image_embedding": image_embedding,
                   f"{name}/text_embedding": text_embedding})
    arrays.update({f"{name}/state/{key}": value.numpy() for key, value in model.state_dict().items()})
  np.savez_compressed(FIXTURE, **arrays)
  print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size / 1024:.0f} KiB, {len(arrays)} arrays)")


if __name__ == "__main__":
  main()
