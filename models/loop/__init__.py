"""The bootstrapping round as plain functions: seeding, the stages of a round (train, generate,
judge, cycle, evaluate), the pool as training reads it, held-out evaluation, contact sheets."""
