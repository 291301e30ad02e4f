"""Setting up the machine and running the scenarios and the demo."""
