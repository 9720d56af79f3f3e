"""Routing: which deployment of a job's model group serves its call, and the shared state in Redis
that choice reads (circuit breakers, observed latency and load)."""
