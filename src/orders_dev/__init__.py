"""Development tools for the orders service, never shipped with it: stand-ins for payments,
the kitchen and delivery (`standins`), and throwaway keys, tokens and local secrets
(`devtoken`). The production image holds only the `orders` package; the `dev-tools` target
of the Containerfile adds these for the compose stack."""
