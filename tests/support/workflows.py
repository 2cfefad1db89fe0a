"""Workflow definitions more than one test reads."""

# StackStorm's own fail-inspection fixture, shaped: three problems `inspect` must report.
FAIL_INSPECTION = """\
version: 1.0

description: A basic sequential workflow.

vars:
  - macro: polo

tasks:
  task1:
    action: core.local cmd=<% ctx().foobar %>
    next:
      - when: <% succeeded() %>
        do:
          - task2
  task2:
    action: core.local
    input:
        - cmd: echo <% ctx().macro %>
    next:
      - when: <% <% succeeded() %>
        do: task3
  task3:
    action: std.noop
"""
