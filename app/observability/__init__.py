"""Observability: logs and the log sink, log exports, metrics, monitoring, audit and API timings."""
