"""The camera pipeline: cameras, detections, per-camera batches, events, stage telemetry and the
runtime pipeline configuration. `app.pipeline.ai` holds the AI backends it calls."""
