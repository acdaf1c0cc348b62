"""Task modules, one per queue family. Task names are `vigil.<family>.<name>`; the router sends
each family to its queue (see app/celery/app.py)."""
