"""Server tests (ucs_lambda)."""
