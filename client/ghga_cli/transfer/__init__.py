"""The byte layer: one pycurl engine and the upload and download strategies it runs."""
