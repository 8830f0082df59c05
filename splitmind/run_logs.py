"""Each `splitmind up` run logs into its own folder, `<log-dir>/<date>-<time>-<pid>/`, so that the
next run does not overwrite the logs of one that crashed. `<log-dir>/latest` points at the
newest; the oldest folders beyond `KEEP_RUNS` are removed."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

KEEP_RUNS = 20
LATEST = "latest"


def new_run_dir(base: Path, keep: int = KEEP_RUNS) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    run, n = base / stem, 1
    while True:
        try:
            run.mkdir()
            break
        except FileExistsError:  # two runs of one process within a second (tests)
            n += 1
            run = base / f"{stem}.{n}"
    link = base / LATEST
    tmp = base / f".{LATEST}.{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(run.name)
    tmp.replace(link)  # atomic: a reader never finds `latest` missing
    runs = sorted(p for p in base.iterdir() if p.is_dir() and not p.is_symlink() and p.name[:8].isdigit())
    for old in runs[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return run
