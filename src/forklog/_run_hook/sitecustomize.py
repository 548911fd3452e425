"""forklog run's hook: every Python process below ``forklog run`` attaches to its hub as it starts.

``forklog run`` puts this directory first on ``PYTHONPATH`` and names the
hub in ``FORKLOG_HUB``; Python imports ``sitecustomize`` at start, before
the program runs. This one leaves ``sys.path`` as it found it, attaches the
process (forklog._worker.attach: bounded, said once on stderr if it cannot),
then imports the next ``sitecustomize`` on the path, if any (the
application's, a distribution's, ``opentelemetry-instrument``'s), which it
would otherwise shadow. A child started with ``python -I`` or ``-E``
ignores ``PYTHONPATH``: it logs as it would without forklog.
"""

import os
import sys


def _attach_then_chain() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != here]
    if os.environ.get("FORKLOG_HUB"):
        try:
            from forklog._worker.attach import attach  # noqa: PLC0415 - only when under forklog run
        except ImportError as exc:
            sys.stderr.write(
                f"forklog: {sys.executable} cannot import forklog ({exc}): pid {os.getpid()} "
                "logs as it would without forklog\n"
            )
        else:
            attach()
    mine = sys.modules.pop("sitecustomize", None)
    try:
        import sitecustomize  # type: ignore[import-not-found]  # noqa: F401, PLC0415 - the next one, if any
    except ModuleNotFoundError as exc:
        if exc.name != "sitecustomize":
            raise  # an error inside the next one: Python says it, as without forklog
        if mine is not None:
            sys.modules["sitecustomize"] = mine  # the import system expects the module it is loading


_attach_then_chain()
