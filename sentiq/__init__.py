"""What producer and worker share: settings, the wire contract and the error types."""

from sentiq.settings import Settings, load_settings

__all__ = ["Settings", "load_settings"]
