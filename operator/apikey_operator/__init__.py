"""apikey-operator: generates, stores, projects, rotates and revokes API keys on Kubernetes."""

__version__ = "0.1.0"
