"""HTTP routes as Chalice blueprints (thin: parse, call a service, shape the response)."""
