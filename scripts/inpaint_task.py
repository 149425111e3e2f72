#!/usr/bin/env python3
"""Run one task of an inpainting job array: complete.py on the task's range of test images.

    python scripts/inpaint_task.py [--task I] [--tasks N] -- COMPLETE_ARGS...

The task index and count default to SLURM's $SLURM_ARRAY_TASK_ID and
$SLURM_ARRAY_TASK_COUNT. The test images are cut into N contiguous ranges
whose length is a whole number of inpainting batches (--batch_size). So
every image is optimized in the same batch, at the same position, as in a
single complete.py run over all images, and gets the same result. A task
whose range starts past the last image has nothing to do and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from study.cli import run_main, setup_logging  # noqa: E402

log = logging.getLogger("inpaint_task")


def task_range(n_images: int, batch_size: int, task: int, tasks: int) -> tuple[int, int]:
    """Return ``(start, end)`` of ``task`` of ``tasks``; ``start == end`` when it has no images."""
    if tasks < 1 or not 0 <= task < tasks:
        raise ValueError(f"invalid task {task} of {tasks}: the index must be in 0..{tasks - 1}")
    if batch_size < 1:
        raise ValueError(f"--batch_size must be at least 1, got {batch_size}")
    per_task = math.ceil(n_images / tasks)
    chunk = math.ceil(per_task / batch_size) * batch_size
    start = min(task * chunk, n_images)
    return start, min(start + chunk, n_images)


def _environment_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


def count_test_images(args: argparse.Namespace) -> int:
    """Count the test images that complete.py would read with ``args``."""
    from study.layout import Layout
    from study.split import read_split_list

    if args.test_dir:
        return sum(1 for path in Path(args.test_dir).iterdir() if path.is_file())
    return len(read_split_list(Layout(args.root).split_dir, "test"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", type=int, default=_environment_int("SLURM_ARRAY_TASK_ID"),
                        help="task index from 0 (default: $SLURM_ARRAY_TASK_ID)")
    parser.add_argument("--tasks", type=int, default=_environment_int("SLURM_ARRAY_TASK_COUNT"),
                        help="number of tasks (default: $SLURM_ARRAY_TASK_COUNT)")
    parser.add_argument("complete_args", nargs=argparse.REMAINDER,
                        help="arguments of complete.py, after --")
    args = parser.parse_args(argv)
    setup_logging()
    if args.task is None or args.tasks is None:
        raise ValueError("no task given: pass --task and --tasks, or run inside a SLURM job array")
    complete_args = args.complete_args[1:] if args.complete_args[:1] == ["--"] else args.complete_args

    import complete
    from study import presets

    options = complete.build_parser().parse_args(complete_args)
    if options.start != 0 or options.end is not None:
        raise ValueError("--start and --end are set per task; leave them out of the complete.py arguments")
    presets.apply_preset(options, "complete")
    n_images = count_test_images(options)
    start, end = task_range(n_images, options.batch_size, args.task, args.tasks)
    if start == end:
        log.info("task %d of %d: no test images in its range (%d images, batches of %d); nothing to do",
                 args.task, args.tasks, n_images, options.batch_size)
        return 0
    log.info("task %d of %d: test images %d to %d of %d", args.task, args.tasks, start, end - 1, n_images)
    return complete.main(complete_args + ["--start", str(start), "--end", str(end)])


if __name__ == "__main__":
    run_main(main)
