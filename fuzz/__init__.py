"""Fuzzing dcformat's decoder: the harness, a CRC-fixing mutator, hand-built hostile files."""
