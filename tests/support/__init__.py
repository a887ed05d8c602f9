"""Shared test helpers: hypothesis strategies, hand-built files, synthetic models, data folders."""
