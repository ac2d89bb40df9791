"""Domain rules in plain Python: no boto3, pynamodb or chalice imports here.

Everything in this package can be unit-tested without AWS or a web framework.
"""
