"""Config files as values: load a file's `get_config()`, set dotted keys on a config as the command line would, and
flatten a config to {"section.key": value}. Used by the study runner (a run = base file + overrides) and by the
plan command (a written plan = base file + the plan's overrides)."""

import importlib.util
import json
import os
from typing import Any

import ml_collections

# The repository root: a relative config path that is not found from the working directory is looked up here, so
# that a file naming "configs/declip_vit_b32.py" as its base works from any directory.
REPOSITORY_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def resolve_path(path: str) -> str:
  """`path` if it exists (absolute, or relative to the working directory), else relative to the repository root;
  FileNotFoundError naming both when neither exists."""
  if os.path.isabs(path) or os.path.exists(path):
    if not os.path.exists(path):
      raise FileNotFoundError(f"config file {path} does not exist.")
    return path
  candidate = os.path.join(REPOSITORY_ROOT, path)
  if not os.path.exists(candidate):
    raise FileNotFoundError(f"config file {path} exists neither in the working directory nor in {REPOSITORY_ROOT}.")
  return candidate


def load_config(path: str) -> ml_collections.ConfigDict:
  """`get_config()` of a config file (a path as `resolve_path` finds it)."""
  spec = importlib.util.spec_from_file_location("declip_config_file", resolve_path(path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def set_keys(config: ml_collections.ConfigDict, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
  """`config` with each ("key.path" -> value) override set in place, as `--config.key.path=value` would (a list
  becomes the key's tuple); KeyError naming the key when the config has no such key."""
  for key, value in overrides.items():
    *parents, name = key.split(".")
    node = config
    for parent in parents:
      if parent not in node:
        raise KeyError(f"override {key!r}: the config has no such key.")
      node = node[parent]
    if name not in node:
      raise KeyError(f"override {key!r}: the config has no such key.")
    node[name] = type(node[name])(value) if isinstance(node[name], (tuple, list)) else value
  return config


def with_overrides(path: str, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
  """The config of the file at `path` with each ("key.path" -> value) override set (`set_keys`)."""
  return set_keys(load_config(path), overrides)


def flatten(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """{"section.key": value} for every leaf of a config, in JSON's types (tuples as lists)."""
  out = {}

  def walk(node: dict, prefix: str):
    for key, value in node.items():
      if isinstance(value, dict):
        walk(value, f"{prefix}{key}.")
      else:
        out[f"{prefix}{key}"] = json.loads(json.dumps(value))
  walk(config.to_dict(), "")
  return out
