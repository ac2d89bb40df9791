"""The test suite, a package: shared code lives in :mod:`tests.helpers` and is imported as such."""
