"""Benchmarks of the stack through nginx, beside PostgreSQL's and nginx's own ceilings (`make bench`)."""
