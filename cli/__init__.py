"""boltraft_cli: the ``boltraft`` command line, a thin click app over the library and client."""
