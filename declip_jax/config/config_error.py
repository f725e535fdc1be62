"""ConfigError and `require`: a leaf module, so that raising a config error imports nothing heavy."""


class ConfigError(ValueError):
  """A config value is invalid; the message names the key(s) and what to do."""


def require(condition: bool, message: str) -> None:
  """Raises ConfigError(message) unless `condition`."""
  if not condition:
    raise ConfigError(message)
