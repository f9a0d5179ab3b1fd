"""The one exception type users see.

Anything raised as `OnnxPruneError` is printed by the CLI as a single line and exits with code 2; any other
exception is a bug in onnxprune.
"""


class OnnxPruneError(Exception):
    """A user-facing error: printed as one line, exit code 2."""
