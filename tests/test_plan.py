"""The plan command (declip_jax/plan/): its rules give back the recipe on the recipe's hardware, carry it to other
device counts, data sizes and batches with valid configs, and its written file trains."""

import json
import math
import os
import subprocess
import sys

import pytest

from declip_jax import config as config_lib
from declip_jax.config import files as config_files
from declip_jax.plan import cli, rules, written
from declip_jax.training import nn_queue

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = "configs/declip_vit_b32.py"
# YFCC-15M as the recipe counts it: 128,001 steps of 4,096 are 32 epochs of this many pairs.
RECIPE_EXAMPLES = 128_001 * 4096 // 32


def _planned(path: str, request: rules.Request):
  config = config_files.load_config(path)
  choices = rules.plan(config, request)
  planned = config_files.set_keys(config_files.load_config(path), rules.overrides(choices))
  config_lib.validate_training(planned, rules.batch_shards(planned, request.devices))
  return config, choices, planned


def test_the_recipe_on_its_own_hardware_and_data_is_the_recipe():
  assert cli.device_count("gpu:h100:4x8") == 32
  _, choices, _ = _planned(RECIPE, rules.Request(devices=32, examples=RECIPE_EXAMPLES, epochs=32))
  assert [c for c in choices if c.changed] == []
  assert {c.key for c in choices} >= {"train.batch_size", "train.accum_steps", "optim.lr", "optim.warmup_steps",
                                      "train.num_steps", "eval.every_steps", "nns.groups", "nns.group_size",
                                      "ssl.bn_group_size"}


def test_eight_gpus_and_three_million_pairs_keep_the_batch_and_shorten_the_schedule():
  _, choices, planned = _planned(RECIPE, rules.Request(devices=8, examples=3_000_000, epochs=32))
  changed = {c.key: c.value for c in choices if c.changed}
  steps = math.ceil(3_000_000 * 32 / 4096)
  assert planned.train.batch_size == 4096 and planned.optim.lr == 1e-3 and planned.nns.groups == 32
  assert changed["train.num_steps"] == changed["optim.schedule_steps"] == steps
  assert changed["optim.warmup_steps"] == round(2500 * steps / 128_001)
  # The queue is cut to whole lookup chunks with at most 1% of lookups finding the pair's own caption.
  size = changed["nns.group_size"]
  assert size % planned.nns.chunk_size == 0 and size < 65_536
  assert nn_queue.own_pair_fraction(size, 2, 3_000_000) <= rules.MAX_OWN_PAIR_FRACTION
  assert nn_queue.own_pair_fraction(size + planned.nns.chunk_size, 2, 3_000_000) > 0.0095
  assert changed["eval.every_steps"] == max(round(5000 * steps / 128_001), math.ceil(3_000_000 / 4096))


@pytest.mark.parametrize("rule, factor", [("sqrt", 0.5), ("linear", 0.25), ("none", 1.0)])
def test_the_learning_rate_follows_a_changed_batch_by_the_chosen_rule(rule, factor):
  _, _, planned = _planned(RECIPE, rules.Request(devices=8, examples=1_000_000, epochs=10, batch_size=1024,
                                                 lr_rule=rule))
  assert planned.optim.lr == pytest.approx(1e-3 * factor)
  assert planned.optim.warmup_init_lr == pytest.approx(1e-4 * factor)
  assert planned.nns.groups == 8  # One queue per 128 examples, as the recipe's per GPU.


def test_groups_the_shards_cannot_hold_move_to_the_nearest_that_they_can():
  _, _, planned = _planned(RECIPE, rules.Request(devices=8, examples=1_000_000, epochs=1, batch_size=768))
  assert planned.nns.groups == 8  # 768 / 128 = 6 does not divide or divide by 8 shards.


def test_a_cap_on_the_per_device_batch_becomes_exact_accumulation_and_resnet_groups_fit_the_micro_batch():
  _, choices, planned = _planned("configs/declip_rn50.py", rules.Request(devices=4, examples=1_000_000, epochs=1,
                                                                         max_per_device_batch=256))
  assert planned.train.accum_steps == 4  # 1,024 per device in micro-batches of 256.
  assert planned.model.image.bn_group_size == 256
  rule = next(c.rule for c in choices if c.key == "model.image.bn_group_size")
  assert "deviation" in rule


def test_requests_the_rules_cannot_carry_out_say_what_to_do():
  config = config_files.load_config(RECIPE)
  with pytest.raises(rules.PlanError, match="--batch_size=4092 or 4098"):
    rules.plan(config, rules.Request(devices=6, examples=100, epochs=1, batch_size=4096))
  with pytest.raises(rules.PlanError, match="must be positive"):
    rules.plan(config, rules.Request(devices=8, examples=0, epochs=1))
  with pytest.raises(rules.PlanError, match="tpu:<chip>:<topology>"):
    cli.device_count("tpu:v5e")
  assert cli.device_count("tpu:v5e:2x4") == 8 and cli.device_count("cpu:3") == 3
  assert cli.device_count("tpu:v4:2x2x4") == 32  # As libtpu describes a v4 slice: two devices per chip.


def test_the_written_plan_loads_as_the_planned_config(tmp_path):
  config = config_files.load_config(RECIPE)
  request = rules.Request(devices=8, examples=3_000_000, epochs=32)
  choices = rules.plan(config, request, {"zero_shot_imagenet": "not prepared"})
  choices.append(rules.Choice("mesh.shape", (1, -1, 1), (-1, 1, 1), "the AOT check"))
  given = {"data.source": "webdataset"}
  path = tmp_path / "plan.py"
  path.write_text(written.config_file(RECIPE, given, choices, "python -m declip_jax.plan ...", "gpu:a100-40:8",
                                      request, None))
  loaded = config_files.load_config(str(path))
  expected = config_files.set_keys(config_files.load_config(RECIPE), {**given, **rules.overrides(choices)})
  assert config_files.flatten(loaded) == config_files.flatten(expected)
  assert loaded.mesh.shape == (1, -1, 1) and not loaded.evals.zero_shot_imagenet.enabled


def _plan_command(*args):
  return subprocess.run([sys.executable, "-m", "declip_jax.plan", *args], cwd=REPO, capture_output=True, text=True,
                        timeout=600)


def test_a_one_device_plan_with_accumulation_trains_on_cpu(tmp_path):
  plan = tmp_path / "plan.py"
  out = _plan_command("--config=tests/tiny_config.py", "--target=cpu:1", "--examples=96", "--epochs=1",
                      "--max_per_device_batch=8", f"--out={plan}", f"--json_out={tmp_path / 'plan.json'}")
  assert out.returncode == 0, out.stderr[-2000:]
  record = json.loads((tmp_path / "plan.json").read_text())
  assert record["check"]["fits"] and record["check"]["rung"] == "as configured"
  values = {c["key"]: c["value"] for c in record["choices"]}
  assert values["train.accum_steps"] == 2 and values["train.num_steps"] == 6
  assert "fits cpu:1" in out.stdout
  run = subprocess.run([sys.executable, "-m", "declip_jax.main", f"--config={plan}", f"--workdir={tmp_path / 'run'}"],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  results = json.loads((tmp_path / "run" / "eval_results.json").read_text())
  assert results["zero_shot_shape"]["step"] == 6


def test_an_evaluation_without_its_data_is_switched_off_and_a_bad_target_is_one_line(tmp_path):
  out = _plan_command(f"--config={RECIPE}", "--target=gpu:a100-40:8", "--examples=3000000", "--epochs=32",
                      "--check=false", f"--config.evals.zero_shot_imagenet.tfds_data_dir={tmp_path}",
                      f"--out={tmp_path / 'plan.py'}")
  assert out.returncode == 0, out.stderr[-2000:]
  text = (tmp_path / "plan.py").read_text()
  assert "'evals.zero_shot_imagenet.enabled': False,  # True -> off: TFDS dataset 'imagenet2012'" in text
  assert f"'evals.zero_shot_imagenet.tfds_data_dir': '{tmp_path}',  # Given on the command line." in text
  bad = _plan_command(f"--config={RECIPE}", "--target=gpu:nope:8", "--examples=1", "--epochs=1", "--check=false")
  assert bad.returncode == 1
  assert [line for line in bad.stderr.splitlines() if line.startswith("error:")][0].startswith("error: unknown GPU 'nope'; known: h100")


PAGE = os.path.join(REPO, "docs", "train-on-your-data.md")
RECORDS = [os.path.join(REPO, "docs", "benchmarks", "plans", f"{name}.json")
           for name in ("a100_40_8", "h100_1", "v5e_2x4")]


def test_the_page_shows_the_plan_records_as_the_plan_command_renders_them():
  from declip_jax.plan import render
  records = [json.loads(open(p).read()) for p in RECORDS]
  text = open(PAGE).read()
  assert render.rendered(text, records) == text, (
      "docs/train-on-your-data.md differs from its records: python -m declip_jax.plan.render "
      "--page=docs/train-on-your-data.md " + " ".join(os.path.relpath(p, REPO) for p in RECORDS))


@pytest.mark.parametrize("path", RECORDS, ids=os.path.basename)
def test_each_documented_plan_fits_and_is_what_the_rules_give_today(path):
  record = json.loads(open(path).read())
  assert record["check"]["fits"], "every plan the docs show compiles and fits its target"
  request = rules.Request(**record["request"])
  assert request.devices == cli.device_count(record["check"]["target"])
  config = config_files.with_overrides(record["base"], record["given"])
  off = {c["key"].split(".")[1]: c["rule"].removeprefix("off: ") for c in record["choices"]
         if c["key"].endswith(".enabled") and c["rule"].startswith("off: ")}
  today = [(c.key, c.value) for c in rules.plan(config, request, off)]
  recorded = [(c["key"], tuple(c["value"]) if isinstance(c["value"], list) else c["value"])
              for c in record["choices"] if not c["rule"].startswith("the AOT check")]
  assert recorded == today
