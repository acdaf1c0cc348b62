"""What every Celery process of Vigil's installs: bootsteps and lifecycle/observability receivers."""
