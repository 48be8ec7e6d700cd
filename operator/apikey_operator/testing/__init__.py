"""Test harness for apikey-operator and its users' own tests (like `kopf.testing`).

Needs the `testing` extra. The operator itself never imports this package.
"""
