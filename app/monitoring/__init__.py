"""AI monitoring (spec 002): the AI services the pipeline calls, with their Celery pools, as agents
that can be watched (rollups of their finished jobs), alerted on and controlled (pause, resume,
restart, scale). See docs/api.md, "AI monitoring API", for the mapping."""
