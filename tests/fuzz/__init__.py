"""Schemathesis on both OpenAPI documents against the local stack."""
