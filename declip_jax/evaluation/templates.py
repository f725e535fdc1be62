"""Prompt template sets for zero-shot classification, by name (the name is stored with every result)."""

from declip_jax.data import builtin

TEMPLATE_SETS = {
    **{f"builtin_{attribute}": templates for attribute, templates in builtin.ZERO_SHOT_TEMPLATES.items()},
    "class_name": ("{}",),
}


def get(name: str) -> tuple[str, ...]:
  if name not in TEMPLATE_SETS:
    raise ValueError(f"unknown prompt template set {name!r}; known: {sorted(TEMPLATE_SETS)}.")
  return TEMPLATE_SETS[name]
