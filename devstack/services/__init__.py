"""One module per stack service; each defines a devstack.base.Service subclass."""
