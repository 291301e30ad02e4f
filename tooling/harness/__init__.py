"""The test harness: what the Molecule verifiers and the test containers run."""
