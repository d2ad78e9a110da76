"""Shared fixtures. Node fixtures live beside the code they start and are registered here."""
