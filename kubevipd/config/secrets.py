"""Read secrets (BGP passwords, the Metal token) from where the config says they live.

Files and systemd credentials ($CREDENTIALS_DIRECTORY/NAME, from LoadCredential=) keep secrets out
of the config file and out of `ps`; errors name the path, never the content.
"""

from __future__ import annotations

import os
from pathlib import Path

from kubevipd.config.model import SecretRef


class SecretError(Exception):
    """A secret could not be read; the message is safe to log."""


def read_secret(ref: SecretRef, environ: dict[str, str] | None = None) -> str:
    """Return the secret's value, without a trailing newline."""
    env = os.environ if environ is None else environ
    if ref.kind == "inline":
        return ref.value
    if ref.kind == "credential":
        directory = env.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise SecretError(
                f"systemd credential {ref.value} is configured, but CREDENTIALS_DIRECTORY is not "
                "set: add LoadCredential= to the unit, or use a *_file setting"
            )
        path = Path(directory) / ref.value
    else:
        path = Path(ref.value)
    try:
        value = path.read_text("utf-8").rstrip("\r\n")
    except FileNotFoundError:
        raise SecretError(f"secret file {path} does not exist") from None
    except PermissionError:
        raise SecretError(f"secret file {path} is not readable by this process") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SecretError(f"secret file {path} cannot be read ({type(e).__name__})") from None
    if not value:
        raise SecretError(f"secret file {path} is empty")
    return value
