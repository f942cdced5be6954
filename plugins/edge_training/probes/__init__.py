"""Scripts the hooks run on remote hosts (the edge VM, a model container), shipped as package files."""
