"""Base class of errors a stage reports as one clear line instead of a traceback."""


class StageError(RuntimeError):
    """A stage stopped for a reason the user can act on; the message says how."""
