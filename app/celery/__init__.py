"""The shared Celery app: configuration, routing, queues, the broker's lists, the transport and
the result backend. Below the domain packages, above `app.core`."""
