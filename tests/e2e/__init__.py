"""End-to-end tests against the local stack (moto or Ceph RGW), the client run as users run it."""
