"""The bottom layer: settings, database and Redis connections, request context, errors, time and
statistics helpers. Imports no other Vigil package."""
