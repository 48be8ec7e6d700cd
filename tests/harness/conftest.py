"""The harness fixtures: the shared control plane, a namespace per test, kubectl."""

pytest_plugins = ["apikey_operator.testing.fixtures_kube"]
