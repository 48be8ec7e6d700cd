"""The apikey-operator benchmark suite: ``python -m bench`` (see ``bench/__main__.py``).

The operator and a minimal kopf operator (the floor) run as child processes against the
emulated API server, itself in a child process; the driver applies ApiKeys, annotates
them and watches the results. Figures land in ``bench/results.json`` and
``bench/RESULTS.md``.
"""
