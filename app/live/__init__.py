"""Live events: the typed event registry, the bus producers publish on, and the fan-out to WebSocket clients.

Layers: producers in app.pipeline, app.alerts, app.jobs, app.ops and workers import `app.live.bus.publish`;
the API's `/ws/events` (app.api.websocket) runs one `app.live.hub.Hub` per gunicorn worker. See
docs/architecture.md, "Live events", for why pub/sub plus a capped stream, and why the hub owns the sockets.
"""
