"""The error of data that cannot be read (TensorFlow-free, so that config validation and source declarations can
raise it)."""


class DataSourceError(ValueError):
  """The configured data cannot be read: no matching files, nothing usable in them, a missing feature or split."""
