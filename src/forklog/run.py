"""``forklog run -- COMMAND``: one hub for every Python process below a command (issue 24).

The hub runs in this process, with the sinks the ``FORKLOG_*`` variables
name (as a gunicorn config importing ``forklog.gunicorn`` does). The
command runs as its child in a process group of its own, with
``FORKLOG_HUB`` naming the hub's address and forklog's hook first on
``PYTHONPATH``: every Python process below it, however started (fork,
spawn, forkserver, ``subprocess``, a re-exec), attaches to the hub as it
starts (forklog._run_hook). This process stays the parent of everything
below it (a child subreaper): it passes on TERM, INT, QUIT, HUP, USR1,
USR2, TTIN, TTOU and WINCH (USR1 also reopens the hub's files), waits until
its last descendant has exited (a gunicorn USR2 upgrade's new master
included), drains the hub, and exits with the command's status.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from types import FrameType
from typing import List, Optional, Sequence

from forklog._master.attach_server import ENV
from forklog._master.hub import Hub
from forklog._worker.attach import UID_ENV, hub_answers
from forklog._worker.handler import init_worker
from forklog.settings import Settings, SettingsError

__all__ = ["main", "start_hub"]

#: The signals passed on to the command.
FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGWINCH,
)
HOOK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_run_hook")
_PR_SET_CHILD_SUBREAPER = 36


def main(argv: Sequence[str]) -> int:
    """Run ``argv`` (after an optional ``--``) under a hub; its exit status."""
    command = list(argv[1:] if argv[:1] == ["--"] else argv)
    if not command or command[0] in ("-h", "--help"):
        print("usage: forklog run [--] COMMAND [ARGS...]  (docs/servers/index.md)", file=sys.stderr)
        return 0 if command else 2
    outer = os.environ.get(ENV)
    if outer and hub_answers(outer):
        # Already below a hub: a second one would write the same files. The command runs as it is,
        # its processes attaching to the hub above (the environment already names it).
        os.execvp(command[0], command)
    try:
        settings = Settings.from_env()
        hub = Hub(settings.handlers(), **settings.hub_options()).start()
    except SettingsError as exc:
        print(f"forklog: bad settings in the environment:\n{exc}", file=sys.stderr)
        return 1
    try:
        address = hub.listen(settings.hub_group)
    except OSError as exc:  # a group this user may not give files to
        hub.stop()
        print(f"forklog run: cannot open the hub's socket to FORKLOG_HUB_GROUP: {exc}", file=sys.stderr)
        return 1
    _become_subreaper()
    env = dict(os.environ)
    env[ENV] = address
    env[UID_ENV] = str(os.geteuid())  # who may answer at the address (forklog._worker.attach)
    env["PYTHONPATH"] = os.pathsep.join([HOOK, *filter(None, [env.get("PYTHONPATH")])])
    try:
        child = subprocess.Popen(command, env=env, process_group=0)
    except OSError as exc:
        hub.stop()
        print(f"forklog run: cannot start {command[0]}: {exc}", file=sys.stderr)
        return 127
    status = _wait(child, hub)
    hub.stop()
    return status


def start_hub(settings: Optional[Settings] = None) -> Hub:
    """A hub in this process for the processes it starts, when it cannot be run under ``forklog run``.

    For a parent with a hook of its own (Celery's ``worker_init``, a
    supervisor's start): the hub takes ``settings`` (the ``FORKLOG_*``
    variables by default), this process logs through it (its forked
    children inherit that, as a gunicorn worker does), and ``FORKLOG_HUB``
    and forklog's hook are set in its environment, so the Python processes it
    spawns attach as under ``forklog run``. The hub drains at this process's
    exit.
    """
    settings = Settings.from_env() if settings is None else settings
    hub = Hub(settings.handlers(), **settings.hub_options()).start()
    os.environ[ENV] = hub.listen(settings.hub_group)
    os.environ[UID_ENV] = str(os.geteuid())
    os.environ["PYTHONPATH"] = os.pathsep.join([HOOK, *filter(None, [os.environ.get("PYTHONPATH")])])
    init_worker(hub.queue)
    return hub


def _wait(child: subprocess.Popen[bytes], hub: Hub) -> int:
    """Pass signals on until every descendant has exited; the command's status (128 + a signal's)."""
    status: Optional[int] = None

    def forward(signum: int, _frame: Optional[FrameType]) -> None:
        if signum == signal.SIGUSR1:
            hub.reopen()
        # To this process's children: the command, and once it is gone what it left re-parented
        # here (a USR2 upgrade's new master); never to the whole group: gunicorn's workers die of
        # a HUP or USR2 their master would have handled.
        for pid in _children() or ([child.pid] if status is None else []):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    for signum in FORWARDED:
        signal.signal(signum, forward)
    while True:
        try:
            pid, raw = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid == child.pid:
            code = os.waitstatus_to_exitcode(raw)
            status = code if code >= 0 else 128 - code
            child.returncode = code
    for signum in FORWARDED:
        signal.signal(signum, signal.SIG_DFL)
    return 0 if status is None else status


def _children() -> List[int]:
    """This process's children now (re-parented orphans among them)."""
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children") as found:
            return [int(pid) for pid in found.read().split()]
    except OSError:
        return []


def _become_subreaper() -> None:
    """Orphans below this process are re-parented to it, not to init (Linux; elsewhere, nothing)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
