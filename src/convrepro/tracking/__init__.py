"""MLflow: where runs go, what each run records, and queries over them."""
