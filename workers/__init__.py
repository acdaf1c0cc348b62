"""Celery app, tasks, the file watcher and the monitors."""
