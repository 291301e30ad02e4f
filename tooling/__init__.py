"""The project's tooling (not part of the collection qqrelay.relay): harness (the test harness: the
pytest plugin of the verifiers, the fake QQ upstream, the mail sender, the test CA, VRRP),
setup (the machine, the images, the scenario runner, the demo), generate (the files made
from the roles: variable tables, alert rules) and bench (the benchmarks)."""
