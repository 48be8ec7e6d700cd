"""Load with faults: N ApiKeys on a fast policy for a while, the operator SIGKILLed on a
schedule, Kubernetes API faults and store outages firing; prints the figures as JSON.

    .venv/bin/python bench/load_with_faults.py                      # 500 keys, 3 min
    .venv/bin/python bench/load_with_faults.py --keys 30 --duration 40 --kill-every 15
    .venv/bin/python bench/load_with_faults.py --stores kubernetes,vault,aws

Exit status 0 when every invariant held for every key (violations: 0), 1 otherwise.
See docs/reliability.md for the fault model and the figures of a full run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.faults_load import LoadConfig, run_load
from tests.support.store_backends import AWS_TEST_CREDENTIALS, AWS_TEST_REGION

from apikey_operator.testing.servers import MotoServer, OpenBaoServer, TcpProxy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=500)
    parser.add_argument("--duration", type=float, default=180.0)
    parser.add_argument("--kill-every", type=float, default=30.0)
    parser.add_argument("--rotate-every", default="10s")
    parser.add_argument("--grace", default="4s")
    parser.add_argument("--stores", default="kubernetes",
                        help="comma-separated: kubernetes, vault (OpenBao), aws (moto)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--store-timeout", type=float, default=10.0,
                        help="timeoutSeconds of the Vault/AWS stores (outages still hang them)")
    parser.add_argument("--output", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    config = LoadConfig(keys=args.keys, duration=args.duration, kill_every=args.kill_every,
                        rotate_every=args.rotate_every, grace=args.grace, seed=args.seed)
    kinds = [k.strip() for k in args.stores.split(",") if k.strip()]
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="load-")))
        stores: dict[str, dict[str, Any]] = {}
        proxies: dict[str, TcpProxy] = {}
        if "kubernetes" in kinds:
            stores["kubernetes"] = {"type": "kubernetes"}
        if "vault" in kinds:
            bao = stack.enter_context(OpenBaoServer())
            proxies["vault"] = stack.enter_context(TcpProxy(bao.port))
            stores["vault"] = {"type": "vault", "address": proxies["vault"].address,
                               "mount": "secret", "pathPrefix": "apikeys",
                               "auth": {"method": "token", "tokenFile": str(
                                   bao.write_token_file(workdir / "token"))},
                               "timeoutSeconds": args.store_timeout}
        if "aws" in kinds:
            os.environ.update({"AWS_ACCESS_KEY_ID": AWS_TEST_CREDENTIALS["aws_access_key_id"],
                               "AWS_SECRET_ACCESS_KEY":
                                   AWS_TEST_CREDENTIALS["aws_secret_access_key"],
                               "AWS_EC2_METADATA_DISABLED": "true"})
            moto = stack.enter_context(MotoServer())
            proxies["aws"] = stack.enter_context(TcpProxy(moto.port))
            stores["aws"] = {"type": "aws-secrets-manager", "region": AWS_TEST_REGION,
                             "namePrefix": "apikeys/", "endpointUrl": proxies["aws"].address,
                             "timeoutSeconds": args.store_timeout}
        started = time.monotonic()
        report = run_load(workdir, stores, proxies, config,
                          log=lambda line: print(line, file=sys.stderr, flush=True))
    figures = {"config": vars(args) | {"output": str(args.output) if args.output else None},
               "wall_seconds": round(time.monotonic() - started, 1), **report.as_dict()}
    text = json.dumps(figures, indent=2, default=str)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    return 0 if report.violations == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
