"""The HTTP framework every blueprint uses: `@endpoint`, the OpenAPI generator, error envelopes,
auth, request ids, instrumentation and response helpers. Handlers live in `app/api/*.py`."""
