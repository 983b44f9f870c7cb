"""Crew assembly, kickoff, runs store and the CLI."""

from quantcrew.crew.kickoff import CrewRunError, RunOutcome, run

__all__ = ["CrewRunError", "RunOutcome", "run"]
