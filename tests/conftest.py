"""Suite-wide: every key generated during the run is looked for in logs, Events, status,
metadata and metrics at the end (see apikey_operator.testing.faults_leakscan)."""

pytest_plugins = ["apikey_operator.testing.faults_leakscan"]
