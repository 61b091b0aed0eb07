"""Persistence of the device tracker: models, sessions and migrations."""
