"""docs/train-on-your-data.md end to end: every `python -m declip_jax...` command of the page, in order, on CPU, on
images written to a folder here, with the model made tiny through the plan command's `--config.*` values, `cpu`
targets for the GPUs, and a small BPE merges file for OpenAI's. The launchers, TensorBoard and the downloads are
not run."""

import csv
import json
import re
import shlex
import subprocess
import sys

import pytest
from PIL import Image

from declip_jax import token_ids
from declip_jax.data import shapes

from tests.test_docs import REPO

PAGE = REPO / "docs" / "train-on-your-data.md"
NUM_TRAIN, NUM_HELDOUT = 48, 16
MERGES = [("r", "e"), ("c", "i"), ("re", "d"), ("t", "h"), ("th", "e")]  # Ids stay the declip layout's 49,409.
# The recipe's model at test size (flags of the plan command, so the written plan carries them).
TINY = {"model.embed_dim": 16, "model.scan_unroll": 1, "model.image.image_size": 16, "model.image.patch_size": 4,
        "model.image.width": 32, "model.image.layers": 1, "model.image.heads": 2, "model.text.context_length": 16,
        "model.text.vocab_size": 49_409, "model.text.width": 32, "model.text.layers": 1,
        "model.text.heads": 2, "ssl.bn_group_size": 8, "ssl.projector_dim": 24, "ssl.predictor_hidden_dim": 12,
        "nns.chunk_size": 16, "eval.batch_size": 32, "train.log_every_steps": 2, "checkpoint.every_steps": 3}


def page_commands() -> list[str]:
  """The page's `python -m declip_jax...` commands in order (continuation lines joined)."""
  commands = []
  for block in re.findall(r"```bash\n(.*?)```", PAGE.read_text(), re.S):
    for command in block.replace("\\\n", " ").splitlines():
      if command.startswith("python -m declip_jax"):
        commands.append(" ".join(command.split()))
  return commands


def _write_folder(root, split: str, count: int, file: str):
  data = shapes.generate(count, 32, seed=1, split=split)
  with open(root / file, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(("image", "caption"))
    for i, (image, caption) in enumerate(zip(data.images, data.captions)):
      Image.fromarray(image).save(root / f"{split}_{i:03d}.png")
      writer.writerow((f"{split}_{i:03d}.png", caption))


def _on_cpu(command: str, tmp) -> list[str]:
  for path in ("photos/", "shards/", "runs/mine", "my_plan.py", "bench/", "exported/", "bpe_simple_vocab_16e6.txt.gz"):
    command = command.replace(path, f"{tmp}/{path}")
  command = (command.replace("--target=gpu:a100-40:8", "--target=cpu:1")
             .replace("--target=gpu:h100:8", "--target=cpu --devices=1")
             .replace("--examples=3000000", f"--examples={NUM_TRAIN}").replace("--epochs=32", "--epochs=2")
             .replace("--tasks=mine_retrieval,datacomp", "--tasks=mine_retrieval"))
  args = shlex.split(command)
  if args[2] == "declip_jax.plan":
    args += ["--batch_size=16", *(f"--config.{key}={value}" for key, value in TINY.items())]
  return args


@pytest.fixture(scope="module")
def walked(tmp_path_factory):
  """Runs the page's commands; returns (tmp, {module: completed process}) (the last run of each module)."""
  tmp = tmp_path_factory.mktemp("walkthrough")
  (tmp / "photos").mkdir()
  _write_folder(tmp / "photos", "train", NUM_TRAIN, "captions.csv")
  _write_folder(tmp / "photos", "test", NUM_HELDOUT, "heldout.csv")
  token_ids.write_bpe_merges(str(tmp / "bpe_simple_vocab_16e6.txt.gz"), MERGES)
  done = {}
  for command in page_commands():
    args = _on_cpu(command, tmp)
    process = subprocess.run([sys.executable, *args[1:]], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert process.returncode == 0, f"{' '.join(args)}\n{process.stdout[-2000:]}\n{process.stderr[-3000:]}"
    done[args[2]] = process
  return tmp, done


def test_the_page_walks_from_a_folder_to_an_exported_model(walked):
  tmp, done = walked
  assert sorted(done) == ["declip_jax.aot", "declip_jax.benchmark", "declip_jax.benchmark.make_tars",
                          "declip_jax.data.write_tfrecords", "declip_jax.interop.convert", "declip_jax.main",
                          "declip_jax.plan"]
  plan = (tmp / "my_plan.py").read_text()
  assert "'data.source': 'image_folder',  # Given on the command line." in plan
  assert "'train.num_steps': 6," in plan  # 48 pairs x 2 epochs / 16.
  results = json.loads((tmp / "runs/mine/eval_results.json").read_text())
  assert results["retrieval"]["step"] == 6 and results["retrieval"]["num_examples"] == NUM_HELDOUT
  assert "zero_shot_imagenet" not in results  # Switched off by the plan: ImageNet is not prepared here.
  line = json.loads((tmp / "runs/mine/benchmark.jsonl").read_text().splitlines()[0])
  assert line["key"] == "mine_retrieval" and 0 <= line["metrics"]["main_metric"] <= 1
  assert (tmp / "exported" / "declip_jax_model.safetensors").exists()
  assert (tmp / "exported" / "open_clip_config.json").exists()
  assert sorted(p.name for p in (tmp / "shards").glob("*.tfrecord"))


def test_every_command_of_the_page_is_walked():
  modules = [shlex.split(c)[2] for c in page_commands()]
  assert modules.count("declip_jax.main") == 3  # Train, resume, evaluate.
  assert len(modules) == 9
