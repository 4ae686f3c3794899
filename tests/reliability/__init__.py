"""Reliability tests: fault soak, crash and resume, hostile input, secrets and resources."""
