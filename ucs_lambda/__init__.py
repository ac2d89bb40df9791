"""Upload Controller Service and DRS3 download API (server side of ghga-cli).

Layers (see docs/CONTRACTS.md): ``routes`` (Chalice blueprints, thin) call ``services`` (use
cases), which combine ``domain`` rules (plain Python) with ``adapters`` (DynamoDB, S3, SQS).
"""
