"""The outer layer: settings and the ``baton`` command line (the service joins it later)."""
