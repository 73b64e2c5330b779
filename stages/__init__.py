"""One thin script per DVC stage; each main() is what dvc.yaml, the tests and the Prefect flow call."""
