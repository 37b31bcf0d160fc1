"""Constructs shared by more than one stack."""
