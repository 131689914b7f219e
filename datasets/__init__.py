"""Data adapters, paper pre-processing, splits and the synthetic phantom.

Nothing here knows about models, training, Ray or reports.
"""

from covbench.datasets.base import Case, SliceSet

__all__ = ["Case", "SliceSet"]
