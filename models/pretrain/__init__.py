"""Pretraining the tiny profile's base (codec and Fill transformer) on the procedural world,
never on the decomposition task."""
