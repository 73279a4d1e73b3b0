#!/usr/bin/env python3
"""Store the Qdrant API key and the search API key as SSM SecureStrings (before `sam deploy`).

The template only receives the parameter *names*; the functions read the values at run time (powertools
parameters, cached). Values are never taken from the command line (shell history): the Qdrant key is
read from QDRANT_API_KEY or prompted for; the API key from IMGSIM_API_KEY, else generated and printed
once, since clients need it.

    python -m imgsim_tools.put_secrets [--qdrant-key-name /imgsim/qdrant-api-key] [--api-key-name /imgsim/api-key]

Uses the default AWS credentials and region (AWS_PROFILE, AWS_REGION); SecureStrings are encrypted with
the account's aws/ssm key, which the functions may decrypt through SSM without extra KMS permissions.
"""

from __future__ import annotations

import argparse
import getpass
import secrets
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qdrant-key-name", default="/imgsim/qdrant-api-key")
    parser.add_argument("--api-key-name", default="/imgsim/api-key")
    parser.add_argument("--no-overwrite", action="store_true", help="fail if a parameter already exists")
    args = parser.parse_args(argv)

    import boto3
    from botocore.exceptions import BotoCoreError, ClientError
    from imgsim.settings import load

    given = load()  # QDRANT_API_KEY and IMGSIM_API_KEY when set (imgsim.settings)
    qdrant_key = given.engine.qdrant_api_key or getpass.getpass("Qdrant API key: ")
    api_key = given.api.api_key
    generated = not api_key
    api_key = api_key or secrets.token_urlsafe(32)
    if not qdrant_key.strip():
        print("put_secrets: error: empty Qdrant API key", file=sys.stderr)
        return 2
    ssm = boto3.client("ssm")
    try:
        for name, value, what in ((args.qdrant_key_name, qdrant_key, "Qdrant API key"),
                                  (args.api_key_name, api_key, "imgsim API key")):
            ssm.put_parameter(Name=name, Value=value, Type="SecureString", Overwrite=not args.no_overwrite,
                              Description=f"imgsim: {what}")
            print(f"stored {what} in SSM SecureString {name}")
    except (BotoCoreError, ClientError) as exc:
        print(f"put_secrets: error: {exc}", file=sys.stderr)
        return 1
    if generated:
        print(f"generated API key (send it as the x-api-key header; shown once): {api_key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
