"""A gunicorn ``Config`` loaded as gunicorn loads it, for ``python -m forklog check`` (forklog.check).

The file executed as the module ``__config__``, then ``GUNICORN_CMD_ARGS``,
then gunicorn's own command-line flags, each over the one before.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import traceback
from typing import Any, Optional, Sequence, Tuple

from gunicorn.config import Config

__all__ = ["LoadError", "load_config", "parse_command_line"]


class LoadError(Exception):
    """The config, or the app, could not be loaded; the message says why."""


def parse_command_line(argv: Sequence[str]) -> Tuple[str, Optional[str], Any]:
    """(config file, app, parsed flags) from gunicorn's own command line, as gunicorn parses it.

    ``-c gunicorn_conf.py --user www-data -w 4 myproject.wsgi``, or the short
    form ``gunicorn_conf.py [myproject.wsgi] [flags]``. Without ``-c``,
    gunicorn's default file, ``./gunicorn.conf.py``.
    """
    argv = list(argv)
    if argv and not argv[0].startswith("-"):
        argv = ["-c", *argv]  # the short form: the config file first
    parsed = Config().parser().parse_args(argv)
    apps = parsed.args or []
    if len(apps) > 1:
        raise LoadError(f"one app, as gunicorn takes it (module:app), not {len(apps)}: {' '.join(apps)}")
    return parsed.config or "gunicorn.conf.py", (apps[0] if apps else None), parsed


def load_config(path: str, command_line: Any = None) -> Any:
    """A gunicorn ``Config`` loaded from ``path`` as ``gunicorn -c path`` loads it.

    ``command_line``: gunicorn's parsed flags (:func:`parse_command_line`),
    applied last, over the file and ``GUNICORN_CMD_ARGS``, as gunicorn does.
    """
    if not os.path.exists(path):
        raise LoadError(f"{path!r} doesn't exist")
    cfg = Config()
    # As gunicorn.app.base.Application.get_config_from_filename does.
    spec = importlib.util.spec_from_file_location("__config__", path)
    if spec is None or spec.loader is None:
        raise LoadError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules["__config__"] = module
    try:
        spec.loader.exec_module(module)
    except SystemExit as exc:  # the shipped config exits with a message on bad settings
        raise LoadError(f"{path} exited: {exc.code}") from None
    except Exception as exc:
        raise LoadError(f"{path} raised:\n{traceback.format_exc().rstrip()}") from exc
    for key, value in vars(module).items():
        if key in cfg.settings:
            try:
                cfg.set(key.lower(), value)
            except Exception as exc:
                raise LoadError(f"{path}: invalid value for {key}: {value!r} ({exc})") from exc
    env_args = cfg.parser().parse_args(cfg.get_cmd_args_from_env())
    for flags in (env_args, command_line):
        for key, value in vars(flags or argparse.Namespace()).items():
            if value is not None and key not in {"args", "config"}:
                try:
                    cfg.set(key.lower(), value)
                except Exception as exc:
                    flag = "--" + key.replace("_", "-")
                    raise LoadError(f"invalid value for {flag}: {value!r} ({exc})") from exc
    try:
        if hasattr(cfg, "validate"):  # gunicorn 25+: settings checked against each other
            cfg.validate()
        cfg.logger_class  # noqa: B018 - resolved here so a bad one is a load error
    except Exception as exc:
        raise LoadError(f"{path}: {exc}") from exc
    return cfg
