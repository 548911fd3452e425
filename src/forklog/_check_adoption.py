"""What ``python -m forklog check`` says of the handlers a config and an app attach (see forklog.check).

Each handler's fate under adoption (:mod:`forklog._worker.adoption`), where
the app's own records go (:mod:`forklog._worker.fallback`), a file two
handlers name (:mod:`forklog._master.twice`) and a rotation of the app's own
(:mod:`forklog._master.customized`): what the hub will do, said before it runs.
"""

from __future__ import annotations

import contextlib
import logging
import pkgutil
from typing import Dict, List, Optional, Tuple

from forklog._master import customized, twice
from forklog._wire import adopted_lines

__all__ = [
    "ADOPTED",
    "BYPASSES",
    "STAYS",
    "adoption_of",
    "adoption_of_class",
    "routing_lines",
    "workers_writing",
]

Handlers = List[Tuple[str, logging.Handler]]


#: What adoption does with a handler, and why, for the report.
ADOPTED, STAYS, BYPASSES = "adopted", "stays", "bypasses"


def adoption_of(handler: logging.Handler, across_users: bool = False) -> Tuple[str, str]:
    """(what adoption does with ``handler``, why), as forklog._worker.adoption decides it.

    ``across_users``: the handler is made in a worker that runs as another
    user than the master, which opens no file such a worker names.
    """
    try:
        spec = adopted_lines.spec_of(handler)
    except Exception:  # noqa: BLE001 - a handler of a strange shape
        spec = None
    if spec is not None and across_users and spec.kind != "stream":
        return STAYS, "workers run as another user: each writes it itself; --preload lets the master"
    if spec is not None:
        return ADOPTED, "the master writes it"
    if isinstance(handler, logging.StreamHandler):
        return BYPASSES, "writes a file or stream by means of its own"
    return STAYS, "not a local file or stream: runs in each process"


def routing_lines(handlers: Handlers, in_master: Handlers) -> List[str]:
    """Where the app's records go, files two handlers name, rotations of the app's own: one line each."""
    configures = any(not getattr(h, "_gunicorn", False) for _o, h in handlers)  # forklog's are not here
    lines = [
        "the app's records: where its own handlers send them, as without forklog "
        "(the hub's sinks get gunicorn's and forklog's lines)"
        if configures
        else "the app's records: the hub's sinks (the app configures no logging of its own)"
    ]
    first: Dict[str, adopted_lines.TargetSpec] = {}
    for _owner, handler in handlers:
        with contextlib.suppress(Exception):
            spec = adopted_lines.spec_of(handler)
            if spec is None or spec.kind == "stream":
                continue
            if spec.label not in first:
                first[spec.label] = spec
                continue
            first[spec.label], said = twice.merge(first[spec.label], spec, None)
            if said is not None:
                lines.append(said.removeprefix("forklog: "))
    for owner, handler in handlers:
        custom = customized.custom_of(handler)
        path = getattr(handler, "baseFilename", "")
        if custom and (owner, handler) not in in_master:
            lines.append(customized.worker_only(path, custom).removeprefix("forklog: ").rstrip())
        elif custom and not customized.directory_is_own(path):
            lines.append(customized.not_own_directory(path, custom).removeprefix("forklog: "))
    return lines


def workers_writing(handlers: Handlers, workers: int, user: str) -> Optional[Tuple[str, str]]:
    """(problem, fix) when file handlers stay in several workers of another user: each writes the file.

    Each worker then appends to and rotates the file on its own: the
    interleaving and the rotation race that forklog exists to remove.
    """
    files = [h for _owner, h in handlers if isinstance(h, logging.FileHandler)]
    paths = sorted({h.baseFilename for h in files if adoption_of(h, across_users=True)[0] == STAYS})
    if not paths or workers < 2:
        return None
    return (
        f"{len(paths)} file handler(s) stay in the workers: {workers} workers running as {user} each "
        f"write {', '.join(paths)} themselves, and rotate it if the handler rotates (lines of one "
        "worker can land in a file another has just rotated away)",
        "add --preload (or preload_app = True): the app then configures logging in the master, which "
        "writes those files alone; keep their directory the master's (root's, not writable by the "
        "workers' user), so that the master also uses the handler's own namer and rotator there",
    )


def adoption_of_class(spec: Dict[str, object]) -> Tuple[str, str]:  # noqa: PLR0911 - a verdict each
    """(what adoption does, why) for a handler a ``logconfig_dict`` describes, from its class alone.

    The dict is read, not built (building opens files): the class says
    whether the handler writes with the stdlib's own methods.
    """
    try:
        cls = pkgutil.resolve_name(str(spec.get("class", "")))
    except (ImportError, AttributeError, ValueError) as exc:
        return STAYS, f"its class does not import: {exc}"
    if not isinstance(cls, type) or not issubclass(cls, logging.Handler):
        return STAYS, "not a logging.Handler class"
    if issubclass(cls, logging.FileHandler):
        if adopted_lines.file_kind_of_class(cls) is None:
            return BYPASSES, "writes a file by means of its own"
        return ADOPTED, "the master writes it"
    if issubclass(cls, logging.StreamHandler):
        if cls.emit is not logging.StreamHandler.emit:
            return BYPASSES, "writes a stream by means of its own"
        stream = str(spec.get("stream", "ext://sys.stderr"))
        if stream in ("ext://sys.stdout", "ext://sys.stderr"):
            return ADOPTED, "the master writes it"
        return ADOPTED, f"the master writes it if {stream} is stdout or stderr, otherwise it bypasses the hub"
    return STAYS, "not a local file or stream: runs in each process"
