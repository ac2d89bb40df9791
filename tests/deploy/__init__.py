"""Deployment checks: packaging, templates, IAM policy, deployment zip, WSGI/Ceph, proxies."""
