"""Helpers shared by the stage scripts: logging set-up and clean error exits."""

from __future__ import annotations

import logging
import os
import sys
from typing import Callable

from study.errors import StageError

# Errors a user can fix by changing input or flags: printed as one line, no traceback.
USER_ERRORS = (FileNotFoundError, FileExistsError, ValueError, KeyError, PermissionError,
               StageError)


def add_output_arguments(parser, progress: bool = True) -> None:
    """Add the options every stage shares: --no-progress (where it has bars) and -v."""
    if progress:
        parser.add_argument("--no-progress", dest="progress", action="store_false",
                            help="hide progress bars (batch jobs)")
    parser.add_argument("-v", "--verbose", action="store_true", help="also log debug messages")


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    # TensorFlow's C++ start-up chatter hides the stage's own messages.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def run_main(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run a stage's ``main`` and turn user errors into ``error: ...`` and exit status 2."""
    try:
        status = main(argv)
    except USER_ERRORS as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
    sys.exit(status or 0)
