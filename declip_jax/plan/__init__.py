"""The recipe on your hardware: `python -m declip_jax.plan` (cli.py) carries a config's recipe to a device count,
a dataset size and a number of epochs with the rules in rules.py (docs/design.md §22), checks the result with the
AOT ladder, and writes it as a config file (written.py)."""
