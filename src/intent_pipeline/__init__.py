"""intent-pipeline: train, judge, ship, watch and roll back an Italian intent classifier."""

__version__ = "0.1.0"
