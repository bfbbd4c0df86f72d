"""The HTTP side of the server: the app and its routes, the request guard, the h11 connection, the request
schema and the routing of a request to its revision."""
