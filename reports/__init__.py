"""Reporting: reads only a run folder (so it works on results copied from a cluster)."""
