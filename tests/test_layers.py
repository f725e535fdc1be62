"""The layers of docs/design.md §11, read from the source's import statements: models know no losses or data,
losses no models or data, config no evaluation, the core below data/ imports nothing of it, and nothing outside
data/ imports a source module (only the registry, `declip_jax.data.sources`)."""

import ast
import pathlib

import pytest

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


@pytest.mark.parametrize("name", ["config.py", "presets.py", "token_ids.py", "templates.py", "builtin_vocabulary.py"])
def test_the_core_modules_at_the_root_import_no_data_or_evaluation_module(name):
  allowed = {"declip_jax.data", "declip_jax.data.sources"} if name == "config.py" else set()  # The registry.
  wrong = {n for n in imported(PACKAGE / name) - allowed
           if n.startswith(("declip_jax.data", "declip_jax.evaluation"))}
  assert not wrong, sorted(wrong)


def test_no_module_outside_data_imports_a_source_module():
  kinds = {f"declip_jax.data.sources.{kind}" for kind in SOURCE_KINDS}
  outside = [p for p in PACKAGE.rglob("*.py") if "data" not in p.relative_to(PACKAGE).parts[:1]]
  wrong = {f"{p.relative_to(PACKAGE)}: {n}" for p in outside for n in imported(p) if n in kinds}
  assert SOURCE_KINDS >= {"builtin", "tfrecord", "webdataset", "tfds", "image_folder"} and not wrong, sorted(wrong)


def test_data_has_one_module_per_source_kind():
  readers = sorted(p.name for p in (PACKAGE / "data").glob("*_source.py"))
  assert not readers, f"readers beside data/sources/: {readers}"
