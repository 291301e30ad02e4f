"""The monitoring scenario's Prometheus, once it scrapes every endpoint of the relay."""

from __future__ import annotations

from typing import Any

import pytest

from tooling.harness.testing import Prometheus, wait_until

RELAY = "mon-relay"  # the label `relay` of the relay's series: its inventory name
# The relay's scrape targets: the exporter, mtail, node_exporter, the upstream's probe and
# the two submission ports' probes.
TARGETS = 6
# Shortened in molecule.yml: rules and probes every 2 s, events counted over 30 s, a few
# seconds of pending time; the first scrape after an event is at most 2 s later.
ALERT_TIMEOUT = 60


@pytest.fixture(scope="module")
def prometheus(instances: dict[str, list[Any]]) -> Prometheus:
    found = Prometheus(instances["prometheus"][0], ALERT_TIMEOUT, relay=RELAY)
    wait_until(lambda: found.value(f'count(up{{relay="{RELAY}"}} == 1)') == TARGETS, 90,
               "Prometheus to scrape every endpoint of the relay")
    return found
