"""Fake vendor servers: real HTTP on loopback, seeded data, fault injection.

Used by ``lms-sync demo``, ``lms-sync sandbox``, the tests and the benchmarks.
"""
