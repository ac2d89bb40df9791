"""Use cases combining domain rules with adapters (one module per API)."""
