"""Shared limits: the login attempt log behind the password rate limit (base.py), kept in memory (one
process), in Redis or in PostgreSQL (several processes)."""
