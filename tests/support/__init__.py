"""Helpers shared by the test modules: one home, one version of each.

Test modules import from here (never from another test_*.py); pytest fixtures live in the
conftest.py files and build on these helpers.
- app: settings for an app under test, and a test client around it
- packs: writing packs and rule files into a test's folder
- waiting: polling the API until a trigger instance or an execution is done
- processes: child processes seen through /proc
- postgres: scratch PostgreSQL databases
- serve: real `hookyard serve` processes (acceptance tests)
"""
