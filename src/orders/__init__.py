"""CoffeeMesh orders service."""
