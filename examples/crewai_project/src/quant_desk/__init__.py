"""quantcrew's crew as a crewAI project (``crewai run``), with one hook of the project's own."""
