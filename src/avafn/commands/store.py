"""``avafn store check STORE [--repair]``: verify a feature store, move damage aside."""

from __future__ import annotations

import argparse

from avafn.argtypes import folder
from avafn.commands import help_of


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("store", help=help_of("store"))
    sp = p.add_subparsers(dest="store_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    c = sp.add_parser(
        "check", help="verify every shard and meta.json of a feature store",
        description="Read every meta.json and shard of a feature store (pickles refused) and "
                    "list what is damaged: truncated or garbage shards, shards whose arrays do "
                    "not match meta.json, utterances stored twice with different vectors, "
                    "temp files of killed writers. With --repair, damaged files are moved to "
                    "<modality>/damaged/; the same extraction command run again then redoes "
                    "exactly what they held; a folder without the store's store.json is "
                    "refused (nothing of it is moved). Exit status 1 while problems remain.")
    c.add_argument("store", metavar="STORE", type=folder, help="feature store folder")
    c.add_argument("--repair", action="store_true",
                   help="move damaged files aside (<modality>/damaged/) and remove temp files "
                        "of dead writers")
    c.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    from avafn.store import FeatureStore, StoreError

    report = FeatureStore(args.store).check(repair=args.repair)
    print(report.summary())
    if not report.ok:
        raise StoreError(f"{len(report.problems)} problem(s) in {args.store}; "
                         f"`avafn store check {args.store} --repair` moves the damaged files "
                         "aside")
    return 0
