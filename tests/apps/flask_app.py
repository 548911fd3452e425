"""A Flask app configured as Flask's documentation says ("Logging", Basic Configuration)."""

from __future__ import annotations

from logging.config import dictConfig

from flask import Flask, request

dictConfig(
    {
        "version": 1,
        "formatters": {"default": {"format": "[%(asctime)s] %(levelname)s in %(module)s: %(message)s"}},
        "handlers": {
            "wsgi": {
                "class": "logging.StreamHandler",
                "stream": "ext://flask.logging.wsgi_errors_stream",
                "formatter": "default",
            }
        },
        "root": {"level": "INFO", "handlers": ["wsgi"]},
    }
)

app = Flask(__name__)


@app.route("/log")
def log() -> str:
    """app.logger at INFO and WARNING, tagged with the request's id."""
    rid = request.args.get("id", "")
    app.logger.info("flask info id=%s", rid)
    app.logger.warning("flask warning id=%s", rid)
    return "ok"


@app.route("/health")
def health() -> str:
    return "ok"
