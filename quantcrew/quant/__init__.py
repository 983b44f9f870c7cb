"""Numeric helpers both sides may import: numpy only, nothing above them.

Performance statistics, Student-t functions, Markov-chain helpers and the ensemble's
uncertainty formulas live here so that the agent side (fallbacks, backtests, reports) and the ML
server compute them the same way.
"""
