"""Reliability series (fault matrix, crash series, load) and the helpers they share."""
