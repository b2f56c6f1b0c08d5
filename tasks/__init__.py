"""Thin Prefect @task wrappers over models/ and storage/: retries, tags, names, artifacts only."""
