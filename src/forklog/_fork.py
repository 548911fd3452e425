"""The one place forklog hooks ``fork()``: a registry run by a single ``os.register_at_fork``.

Every part that must act around a fork (the channel's counters, the hub's
quiescing, the sinks' connections, adoption's lock) registers here, on its
first use and never at import. :func:`release_descriptors` is how a child lets
go of a file its parent writes. The order is the interpreter's own: the
``before`` hooks run last registered first, the ``after`` hooks first
registered first. A hook that raises is reported on stderr and the others
still run, as ``os.register_at_fork`` does.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import traceback
from typing import Callable, List, Optional

__all__ = ["on_fork", "release_descriptors"]

Hook = Callable[[], None]

_before: List[Hook] = []
_after_in_parent: List[Hook] = []
_after_in_child: List[Hook] = []


def on_fork(
    *,
    before: Optional[Hook] = None,
    after_in_parent: Optional[Hook] = None,
    after_in_child: Optional[Hook] = None,
) -> None:
    """Run these around every ``fork()`` of this process from now on; a hook given twice runs once."""
    _install()
    for hook, hooks in (
        (before, _before),
        (after_in_parent, _after_in_parent),
        (after_in_child, _after_in_child),
    ):
        if hook is not None and hook not in hooks:
            hooks.append(hook)


def _run(hooks: List[Hook]) -> None:
    for hook in hooks:
        try:
            hook()
        except Exception:  # noqa: BLE001 - one part's failure must not skip the others
            sys.stderr.write(f"forklog: a fork hook failed ({hook.__module__}.{hook.__qualname__}):\n")
            traceback.print_exc()


@functools.cache
def _install() -> None:
    os.register_at_fork(
        before=lambda: _run(_before[::-1]),
        after_in_parent=lambda: _run(list(_after_in_parent)),
        after_in_child=lambda: _run(list(_after_in_child)),
    )


def release_descriptors(handler: logging.Handler) -> None:
    """In a forked child: let go of the sink's file without flushing or closing its stream.

    The stream object is the parent's, with the parent's unwritten bytes in
    its buffer (H6): its descriptor is pointed at ``/dev/null`` instead, so
    the file is no longer held (logrotate's rename frees the disk, H25) and
    nothing the child's copy might flush can reach it.
    """
    directory = getattr(handler, "directory", None)  # a file sink's held directory (LogDirectory)
    release = getattr(directory, "release_in_child", None)
    if callable(release):
        release()
    stream = getattr(handler, "stream", None)
    if not isinstance(handler, logging.StreamHandler) or stream is None:
        return
    try:
        fd = stream.fileno()
    except Exception:  # noqa: BLE001 - closed, or not a real file
        return
    if fd <= 2:
        return
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.dup2(null, fd, inheritable=False)
        finally:
            os.close(null)
