"""Fakes, harnesses and helpers shared by the test modules."""
