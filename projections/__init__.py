"""Projections: pure folds of events into views, and the projector that stores them."""
