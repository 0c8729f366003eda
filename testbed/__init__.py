"""The `testbed` command: one entry point dispatching to the packages."""
