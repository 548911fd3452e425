"""The package as a user imports it."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_import_has_no_side_effects() -> None:
    """Importing forklog and forklog.gunicorn attaches no handler, starts no thread, registers no atexit."""
    code = textwrap.dedent(
        """
        import atexit, logging, threading
        # The stdlib modules forklog uses register their own atexit hooks at import.
        import logging.handlers, multiprocessing.reduction, multiprocessing.util, gunicorn.glogging
        before = atexit._ncallbacks()
        import forklog, forklog.gunicorn
        assert threading.active_count() == 1, threading.enumerate()
        assert logging.getLogger().handlers == []
        assert logging.getLogger("gunicorn.error").handlers == []
        assert atexit._ncallbacks() == before
        assert forklog.__all__ == sorted(forklog.__all__)
        assert sorted(forklog.gunicorn.__all__) == [
            "child_exit", "logger_class", "on_exit", "on_starting",
            "post_fork", "worker_abort", "worker_exit",
        ]
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"
