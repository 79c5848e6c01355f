"""Consumers: workers that run agents, and the LLM providers they call."""
