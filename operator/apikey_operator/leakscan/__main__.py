"""`python -m apikey_operator.leakscan PATH...`: the same scan as `apikey-operator scan`."""

import sys

from apikey_operator.leakscan.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="python -m apikey_operator.leakscan"))
