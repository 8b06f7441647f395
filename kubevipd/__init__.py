"""kubevipd: keeps a control-plane virtual IP on exactly one healthy node."""

__version__ = "0.1.0"
