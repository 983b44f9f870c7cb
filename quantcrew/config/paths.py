"""Absolute paths of the files shipped in the package (crewAI YAML, samples)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["AGENTS_YAML", "CONFIG_DIR", "PACKAGE_DIR", "TASKS_YAML"]

CONFIG_DIR = Path(__file__).resolve().parent
PACKAGE_DIR = CONFIG_DIR.parent
AGENTS_YAML = CONFIG_DIR / "agents.yaml"
TASKS_YAML = CONFIG_DIR / "tasks.yaml"
