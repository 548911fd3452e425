"""An adopted handler's own rotation functions and names: kept where the master can, said where it cannot.

The logging cookbook's ``rotator``/``namer`` (gzip backups) and a
``TimedRotatingFileHandler``'s ``suffix``/``extMatch`` change what a
rotation makes (issue 22, item 3). They are the app's code and objects, not
data a pipe can carry:

* where the master has them (the app configured logging in the master:
  ``--preload``, ``logconfig_dict``) and the file's directory is the
  master's own (its owner, not writable by group or others), the master's
  sink for that file uses them: the same backup names as the stdlib;
* where it does not (the handler lives only in a worker, or the directory
  is another user's: the app's ``rotator`` works by path, which the master
  trusts in no directory another user can write), the master rotates with
  the stdlib's default names and plain backups, and says so, once per file,
  at start; ``python -m forklog check`` says it too.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import stat
from typing import Any, Dict, List, Optional

__all__ = ["Custom", "apply", "custom_of", "directory_is_own", "not_own_directory", "worker_only"]

#: A TimedRotatingFileHandler's default suffix for each ``when`` (the stdlib's).
_SUFFIX = {"S": "%Y-%m-%d_%H-%M-%S", "M": "%Y-%m-%d_%H-%M", "H": "%Y-%m-%d_%H", "D": "%Y-%m-%d"}

Custom = Dict[str, Any]


def custom_of(handler: logging.Handler) -> Custom:
    """What of ``handler``'s rotation is its own: ``namer``, ``rotator``, a timed ``suffix``/``extMatch``."""
    found: Custom = {}
    for name in ("namer", "rotator"):
        if getattr(handler, name, None) is not None:
            found[name] = getattr(handler, name)
    if isinstance(handler, logging.handlers.TimedRotatingFileHandler):
        when = str(handler.when).upper()
        default = _SUFFIX.get("D" if when == "MIDNIGHT" or when.startswith("W") else when)
        if handler.suffix != default:
            found["suffix"], found["extMatch"] = handler.suffix, handler.extMatch
    return found


def directory_is_own(path: str) -> bool:
    """Whether ``path``'s directory is the master's: its owner, writable by no one else."""
    try:
        st = os.stat(os.path.dirname(path) or ".")
    except OSError:
        return False
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def apply(sink: logging.Handler, custom: Optional[Custom]) -> None:
    """Give the master's sink the app's own rotation functions and names."""
    for name, value in (custom or {}).items():
        setattr(sink, name, value)


def worker_only(path: str, custom: Custom) -> str:
    """What is said when a worker's handler has them and the master does not."""
    return (
        f"forklog: the handler for {path} has its own {_names(custom)}, which only the worker has; "
        f"the master rotates {path} with the stdlib's default names and plain backups. To keep them, "
        "configure logging in the master (--preload, logconfig_dict)\n"
    )


def not_own_directory(path: str, custom: Custom) -> str:
    return (
        f"forklog: the handler for {path} has its own {_names(custom)}, not used: they work by path, and "
        f"{os.path.dirname(path)} is not the master's own (another owner, or writable by others); "
        "the master rotates it with the stdlib's default names and plain backups"
    )


def _names(custom: Custom) -> str:
    names: List[str] = [name for name in custom if name != "extMatch"]
    return "/".join(names)
