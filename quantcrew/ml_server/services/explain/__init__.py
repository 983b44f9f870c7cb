"""The explain family: why a model said what it said (permutation importance, surrogate, local perturbation)."""
