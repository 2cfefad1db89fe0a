"""Helpers shared by the test modules: one home, one version of each.

Test modules import from here, never from another test_*.py or a conftest.py
(tests/unit/test_test_layout.py checks it); the pytest fixtures live in the conftest.py
files and build on these helpers.

- app: settings for an app under test (`settings_for`), a test client around it
- packs: packs and rule files written into a test's folder
- waiting: polling the API until a trigger instance or an execution is done
- processes: child processes seen through /proc
- ingest_writer: the ingest writer child process and the rows it stores
- postgres: scratch PostgreSQL databases
- serve, stream, cli: real `hookyard serve` processes, load streams posted to them, and
  the `hookyard` client commands run against them (acceptance tests)
- batching: an in-memory write_batch for the group-commit tests
"""
