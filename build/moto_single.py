"""A single-threaded moto server, used for DynamoDB by the local stack.

moto's threaded server evaluates DynamoDB conditions without a lock, so two racing
conditional writes can both win (measured: 2-4 winners out of 20 in a third of the rounds).
Real DynamoDB is atomic. Serving requests one at a time restores that property, which the
upload rules ("one active upload per file") depend on. S3 stays on a threaded server.
"""

from __future__ import annotations

import sys

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(host, port, app, threaded=False, request_handler=MotoRequestHandler)
    # A burst of concurrent clients queues in the listen backlog instead of being reset.
    server.socket.listen(256)
    print(f"single-threaded moto on http://{host}:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
