"""The API conversations of each file (UCS and DRS clients, upload and download jobs)."""
