"""Paper-versus-reproduction tables and plots from MLflow runs."""
