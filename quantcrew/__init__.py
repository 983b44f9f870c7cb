"""quantcrew: CrewAI agents for quantitative research over a separate ML server.

Importing this package loads nothing heavy; import what you need from its subpackages
(``quantcrew.tools``, ``quantcrew.data``, ``quantcrew.ml_server``...).
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
