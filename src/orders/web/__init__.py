"""The HTTP interface: routes, endpoints, the API contract, auth, errors and middleware."""
