"""Where the HTTP API lives under a server's URL: shared by the server (`kernel.web`) and the
SDK (`kernel.client`), in a module of its own so that the SDK does not import the server."""

API_PREFIX = "/api/v1"
