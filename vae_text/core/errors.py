"""User-facing errors: one line that names the file or key and says how to fix it.

Entry points catch `VaeTextError`, print its message to stderr and exit non-zero, so a bad input
never shows a traceback and never reaches the point where outputs are written.
"""


class VaeTextError(Exception):
    """Base class for errors a user can fix (bad config, data or checkpoint)."""


class ConfigError(VaeTextError):
    """An invalid configuration value."""


class DataError(VaeTextError):
    """Missing, unreadable, empty or malformed data."""


class CheckpointError(VaeTextError):
    """A missing, corrupt or mismatched checkpoint."""


class OutputError(VaeTextError):
    """An output that cannot be written: no space left, no permission, a file where a folder goes."""
