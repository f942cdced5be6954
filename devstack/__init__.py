"""The local edge stack: `python -m devstack up|status|down`, the seed script, the AML double."""
