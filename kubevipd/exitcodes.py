"""Exit statuses of every kubevipd command, in one place, with what systemd does with each.

The unit has ``Restart=on-failure`` and ``RestartPreventExitStatus=2``: status 1 is restarted
(it may heal by itself: an interface not up yet, a capability not granted yet, a crash), status 2
is not (the config is wrong: restarting cannot mend it, and would only fill the journal).
"""

from __future__ import annotations

OK = 0
FAILURE = 1  # at run time, and anything that can heal by itself: systemd starts us again
CONFIG = 2  # a config (or an argument) that is wrong: only a person can mend it
INTERRUPTED = 130  # Ctrl-C on a command (128 + SIGINT), as shells report it
NOT_RUNNING = 3  # ``kubevipd status``: the daemon is not running (LSB's "program is not running")
