"""Use cases of the orders service and the ports they depend on."""
