"""The one config file: schema, loader and typed model."""

from kubevipd.config.errors import ConfigError, Diagnostic
from kubevipd.config.loader import Loaded, load, load_text
from kubevipd.config.model import Config

__all__ = ["Config", "ConfigError", "Diagnostic", "Loaded", "load", "load_text"]
