"""Logging for the journal: one line per record, every line with its syslog priority.

The daemon's log lines are written for an operator reading ``journalctl -u kubevipd``: what
happened and what to do, never a secret. Under systemd (``JOURNAL_STREAM`` set) each line gets
the ``<N>`` prefix journald reads the priority from; elsewhere a timestamped plain format.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import ClassVar


class JournalFormatter(logging.Formatter):
    """``<N>message``: journald reads the syslog priority from the prefix."""

    PRIO: ClassVar[dict[int, int]] = {
        logging.DEBUG: 7,
        logging.INFO: 6,
        logging.WARNING: 4,
        logging.ERROR: 3,
    }

    def format(self, record: logging.LogRecord) -> str:
        """Every line gets the prefix: journald splits on newlines, so a traceback's lines
        would otherwise land at the default priority."""
        prio = self.PRIO.get(record.levelno, 2 if record.levelno > logging.ERROR else 6)
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines())


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s.%(msecs)03d %(levelname)s %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("urllib3", "kubernetes", "scapy"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
