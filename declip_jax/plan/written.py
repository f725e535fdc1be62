"""What the plan command prints and writes: the table of planned keys, the AOT check's verdict, and the plan as a
config file (the base config file plus the plan's overrides, each with its rule)."""

from typing import Any, Optional

from declip_jax.plan import rules


def _show(value: Any) -> str:
  if isinstance(value, float):
    return f"{value:.6g}"
  if isinstance(value, (tuple, list)):
    return "(" + ", ".join(_show(v) for v in value) + ")"
  return str(value)


def table(choices: list[rules.Choice], given: dict[str, Any]) -> str:
  """A Markdown table of the `--config.*` values given and each planned key: the config's value, the plan's, the
  rule."""
  rows = ["| key | config | plan | rule |", "|---|---|---|---|"]
  rows += [f"| {key} | | {_show(value)} | given on the command line |" for key, value in given.items()]
  rows += [f"| {c.key} | {_show(c.was)} | {'**' + _show(c.value) + '**' if c.changed else _show(c.value)} | "
           f"{c.rule} |" for c in rules.merged(choices)]
  return "\n".join(rows)


def verdict(checked: Optional[dict]) -> str:
  """One line: what the AOT check found (or that it did not run)."""
  if checked is None:
    return "not checked (--check=false): `python -m declip_jax.aot --config=<the plan> --target=...` checks it."
  where = f"{checked['target']} ({checked['what']})"
  if not checked["fits"]:
    return f"does not fit {where} on any rung of the ladder: a smaller --batch_size or more devices."
  memory = f"{checked['needed_gib']:.1f} GiB per device planned" if checked["needed_gib"] else "compiled"
  if checked["available_gib"]:
    memory += f" of {checked['available_gib']:.1f}"
  how = "as planned" if checked["rung"] == "as configured" else f"with '{checked['rung']}'"
  estimate = "" if checked["target"].startswith("cpu") else ": an estimate until a device runs it"
  return f"fits {where} {how}: {memory}{estimate}."


def config_file(base: str, given: dict[str, Any], choices: list[rules.Choice], command: str, target: str,
                request: rules.Request, checked: Optional[dict]) -> str:
  """The plan as a config file for `python -m declip_jax.main --config=...`."""
  lines = [f'"""The plan of {base} for {target}: {request.examples:,} examples x {request.epochs:g} epochs.', "",
           "Written by:", f"  {command}", "AOT check: " + verdict(checked), "",
           "Each key below is the plan's (a comment gives the config's value and the rule; docs/design.md §22).",
           '"""', "", "from declip_jax.config import files", "", f"BASE = {base!r}", "OVERRIDES = {"]
  for key, value in given.items():
    lines.append(f"    {key!r}: {value!r},  # Given on the command line.")
  for c in rules.merged(choices):
    value = tuple(c.value) if isinstance(c.value, list) else c.value
    lines.append(f"    {c.key!r}: {value!r},  # {_show(c.was)} -> {c.rule}")
  lines += ["}", "", "", "def get_config():", "  return files.with_overrides(BASE, OVERRIDES)", ""]
  return "\n".join(lines)


def choices_of(record: dict) -> list[rules.Choice]:
  """The choices of a plan record (the command's --json_out)."""
  return [rules.Choice(c["key"], c["value"], c["was"], c["rule"]) for c in record["choices"]]


def record_markdown(record: dict) -> str:
  """A plan record as the docs show it: the target, the command, the table and the AOT check's verdict."""
  target = record["check"]["target"] if record["check"] else "not checked"
  return "\n".join([f"**{target}**: `{record['command']}`", "", table(choices_of(record), record["given"]), "",
                    verdict(record["check"]), ""])
