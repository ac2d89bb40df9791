"""Tests of the client against fakes and a moto S3 server (no local stack)."""
