"""aisd: keeps Kontomatik multiple-access bank data fresh, unattended and within the rules."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
