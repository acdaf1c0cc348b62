"""Alerting: alert rules, alerts and the notification channels (e-mail, webhook) they deliver on."""
