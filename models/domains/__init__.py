"""Layer tasks, one folder each (models/domains/<task>/: world, judge checks, corruption benchmark,
metrics and trivial baseline, and the `Domain` the round reads). What they share: base.py (the
`Domain` declaration, panel sizes) and shapes.py (signed distance functions). The tasks are
listed in registry.py; adding one is a folder and a line there (README, "Add a layer task")."""
