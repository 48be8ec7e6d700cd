"""The apikey-operator benchmark suite: ``python -m bench`` (see ``bench/__main__.py``).

The operator and a minimal kopf operator (the floor) run as child processes against a real
control plane (etcd, kube-apiserver, kube-controller-manager) behind a request-counting proxy,
itself in a child process; the driver applies ApiKeys, annotates them and watches the results
through the kube-apiserver directly. Figures land in ``bench/results.json`` and
``bench/RESULTS.md``.
"""
