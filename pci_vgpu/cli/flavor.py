"""``flavor explain``: why a flavor fits this host or not, pool by pool.

The exit code is 0 when every request of the flavor can be served now and 1
when one cannot, so scripts can test a flavor before booting it.
"""

from __future__ import annotations

import argparse
import typing as ty

from pci_vgpu import conf as pci_conf
from pci_vgpu.cli import base
from pci_vgpu.cli import flavors
from pci_vgpu.cli import server as server_cli
from pci_vgpu.cli import wiring

EXPLAIN_COLUMNS = ("request", "pool", "free", "verdict", "detail")
USABLE = "usable"


def request_label(req: ty.Any) -> str:
    return "%s x%d" % (req.alias_name or req.request_id, req.count)


def explain_rows(requests: ty.Sequence[ty.Any], explanation: ty.Any,
                 picked: ty.Sequence[ty.Any]) -> list[tuple[ty.Any, ...]]:
    """Rows: every pool's verdict, then the outcome, then the picked devices."""
    labels = {r.request_id: request_label(r) for r in requests}
    rows: list[tuple[ty.Any, ...]] = []
    for req_exp in explanation.requests:
        label = labels.get(req_exp.request_id, str(req_exp.request_id))
        for verdict in req_exp.pools:
            rows.append((label, verdict.pool, verdict.count,
                         verdict.rejected_by or USABLE, verdict.detail))
        outcome = "fits" if req_exp.satisfied else "does not fit"
        rows.append((label, "=> outcome", req_exp.available, outcome,
                     "%d wanted, %d usable" % (req_exp.count, req_exp.available)))
        for dev in picked:
            if getattr(dev, "request_id", None) == req_exp.request_id:
                rows.append((label, "=> would use", None, "picked",
                             server_cli.device_summary(dev)))
    return rows


class FlavorExplain(base.Lister):
    """For each request of a flavor: each pool, the rule that rejected it, the pick."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("flavor", metavar="FLAVOR",
                            help="A [cli] flavor name, a JSON flavor file, or inline extra "
                                 "specs (e.g. 'pci_passthrough:alias=t4-1b:1').")
        parser.add_argument("--numa-node", type=int, default=None, metavar="N",
                            help="Explain for a guest bound to this host NUMA node.")
        parser.add_argument("--refresh", action="store_true",
                            help="Sync the hypervisor's inventory into the database first.")
        self.add_connection_option(parser)
        return parser

    def take_action_checked(self, parsed_args: argparse.Namespace) -> tuple[ty.Any, ...]:
        service = wiring.service(self.driver(parsed_args), sync=parsed_args.refresh)
        flavor = flavors.resolve(parsed_args.flavor, pci_conf.CONF)
        requests = list(wiring.requests_for(flavor).requests)
        explanation, picked = service.tracker.explain(requests, parsed_args.numa_node)
        self.satisfied = bool(explanation.satisfied)
        return EXPLAIN_COLUMNS, explain_rows(requests, explanation, picked)

    def run(self, parsed_args: argparse.Namespace) -> int:
        self.satisfied = True
        result = int(super().run(parsed_args))
        return result if result or self.satisfied else 1
