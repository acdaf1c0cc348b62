"""AI monitoring, as the AI Monitoring API describes it: the AI services the pipeline calls, with their Celery
pools, as agents that can be watched (rollups of their finished jobs), alerted on and controlled (pause, resume,
restart, scale). See docs/api.md, "AI monitoring API", for the mapping."""
