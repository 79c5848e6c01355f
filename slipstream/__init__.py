"""Slipstream core: the event vocabulary, partition keys and the stream store."""
