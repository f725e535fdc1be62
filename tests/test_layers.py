"""The layers of docs/design.md §11, read from the source's import statements: models know no losses or data,
losses no models or data, config no evaluation, the core below data/ imports nothing of it, not even through the
modules it imports, and nothing outside data/ imports a source module (only the registry,
`declip_jax.data.sources`)."""

import ast
import json
import os
import pathlib
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.tiny_config import tiny_config

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "declip_jax"
SOURCE_KINDS = {p.stem for p in (PACKAGE / "data" / "sources").glob("*.py") if p.stem not in ("__init__", "base")}


def imported(path: pathlib.Path) -> set[str]:
  """The declip_jax modules a file imports anywhere in it (late imports included), as dotted names."""
  names = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names |= {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
  return {n for n in names if n.startswith("declip_jax")}


def modules(folder: str) -> list[pathlib.Path]:
  return sorted((PACKAGE / folder).rglob("*.py")) if folder else sorted(PACKAGE.glob("*.py"))


@pytest.mark.parametrize("folder, forbidden", [
    ("models", ("declip_jax.losses", "declip_jax.data", "declip_jax.training", "declip_jax.evaluation")),
    ("losses", ("declip_jax.models", "declip_jax.data", "declip_jax.training", "declip_jax.evaluation")),
    ("training", ("declip_jax.data", "declip_jax.evaluation", "declip_jax.train", "declip_jax.study",
                  "declip_jax.aot")),
])
def test_a_layer_imports_nothing_above_it(folder, forbidden):
  wrong = {f"{p.relative_to(PACKAGE)}: {n}" for p in modules(folder) for n in imported(p)
           if any(n == f or n.startswith(f + ".") for f in forbidden)}
  assert not wrong, sorted(wrong)


ROOT_CORE = ["presets.py", "token_ids.py", "templates.py", "builtin_vocabulary.py", "parallel.py"]
CONFIG_SECTIONS = sorted(p.name for p in (PACKAGE / "config").glob("*.py"))
# The data section's keys come from the data sources (their registry adds them); the evaluations' check asks the
# registry which dataset forms exist. Both import the registry, nothing else of data/.
REGISTRY_READERS = {"data_section.py", "evals_section.py"}


@pytest.mark.parametrize("path", [f"config/{n}" for n in CONFIG_SECTIONS] + ROOT_CORE)
def test_the_config_and_the_core_modules_at_the_root_import_no_data_or_evaluation_module(path):
  registry = {"declip_jax.data", "declip_jax.data.sources"}
  allowed = registry if pathlib.Path(path).name in REGISTRY_READERS else set()
  wrong = {n for n in imported(PACKAGE / path) - allowed if n.startswith(("declip_jax.data", "declip_jax.evaluation"))}
  assert not wrong, sorted(wrong)


def _module_path(name: str) -> pathlib.Path:
  """The file of a declip_jax module or package."""
  relative = pathlib.Path(*name.split(".")[1:])
  package = PACKAGE / relative / "__init__.py"
  return package if package.exists() else (PACKAGE / relative).with_suffix(".py")


def executed_imports(name: str) -> set[str]:
  """The declip_jax modules that importing `name` imports at once: its module-level import statements (those in
  functions run when called), and the packages above each of them (their __init__ runs first)."""
  found = set()
  tree = ast.parse(_module_path(name).read_text())
  nodes = list(tree.body)
  while nodes:  # Module level, including inside top-level if/try/with blocks.
    node = nodes.pop()
    if isinstance(node, (ast.If, ast.Try, ast.With)):
      nodes += [n for part in ("body", "orelse", "finalbody", "handlers") for n in getattr(node, part, [])]
    elif isinstance(node, ast.ExceptHandler):
      nodes += node.body
    elif isinstance(node, ast.Import):
      found |= {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      found.add(node.module)
      found |= {f"{node.module}.{a.name}" for a in node.names if _module_path(f"{node.module}.{a.name}").exists()}
  modules = {n for n in found if n.startswith("declip_jax.") and _module_path(n).exists()}
  return modules | {".".join(n.split(".")[:i]) for n in modules for i in range(2, n.count(".") + 1)}


def import_closure(names: list[str]) -> set[str]:
  """Every declip_jax module that importing `names` loads."""
  seen, todo = set(), list(names)
  while todo:
    name = todo.pop()
    if name not in seen:
      seen.add(name)
      todo += sorted(executed_imports(name) - seen)
  return seen


TRAINING_CORE = sorted(f"declip_jax.{folder}.{p.stem}" for folder in ("training", "models", "losses")
                       for p in (PACKAGE / folder).glob("*.py") if p.stem != "__init__")


def test_the_training_core_loads_no_data_module_even_through_what_it_imports():
  closure = import_closure(TRAINING_CORE)
  assert {"declip_jax.config", "declip_jax.config.loss_section", "declip_jax.parallel"} <= closure  # Followed.
  above = ("declip_jax.data", "declip_jax.evaluation", "declip_jax.interop", "declip_jax.study", "declip_jax.aot")
  wrong = sorted(n for n in closure if n.startswith(above) or n in ("declip_jax.train", "declip_jax.main"))
  assert not wrong, wrong


def test_setting_up_stepping_and_checkpointing_the_core_loads_no_data_module(tmp_path):
  """At run time as well: a process that sets up the core from a config read as JSON (building a config is the
  caller's, and the data section's keys come from the data sources), runs a step and saves a checkpoint."""
  config = tiny_config()
  config.evals = {}
  (tmp_path / "config.json").write_text(config.to_json())
  out = subprocess.run([sys.executable, "-m", "tests.core_closure_check", str(tmp_path)], cwd=REPO,
                       capture_output=True, text=True, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
  assert out.returncode == 0, out.stderr[-3000:]
  report = json.loads(out.stdout.strip().splitlines()[-1])
  assert report["step"] == 1 and report["checkpoints"] == [1]
  assert report["data_modules"] == [] and report["tensorflow"] is False, report


def test_no_module_outside_data_imports_a_source_module():
  kinds = {f"declip_jax.data.sources.{kind}" for kind in SOURCE_KINDS}
  outside = [p for p in PACKAGE.rglob("*.py") if "data" not in p.relative_to(PACKAGE).parts[:1]]
  wrong = {f"{p.relative_to(PACKAGE)}: {n}" for p in outside for n in imported(p) if n in kinds}
  assert SOURCE_KINDS >= {"builtin", "tfrecord", "webdataset", "tfds", "image_folder"} and not wrong, sorted(wrong)


def test_data_has_one_module_per_source_kind():
  readers = sorted(p.name for p in (PACKAGE / "data").glob("*_source.py"))
  assert not readers, f"readers beside data/sources/: {readers}"
