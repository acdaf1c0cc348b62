"""The AI backends: detectors, analysers, the HTTP client they share, circuit breakers and probes."""
