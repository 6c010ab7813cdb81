"""Owns: how every test client talks to the Rust harness — one JSON object per stdout line
(`emit`), diagnostics on stderr (`log`). Standard library only, so that clients run by other
interpreters (the GStreamer publisher under Debian's /usr/bin/python3) can import it too."""

from __future__ import annotations

import json
import sys
import time


def emit(event: str, **fields) -> None:
    """Prints one JSON line on stdout (the clients' only stdout output) and flushes it."""
    record = {"event": event}
    record.update(fields)
    sys.stdout.write(json.dumps(record, sort_keys=True) + "\n")
    sys.stdout.flush()


def log(message: str) -> None:
    """Diagnostics go to stderr so that stdout stays machine-readable."""
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()
