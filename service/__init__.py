"""The web process: HTTP API, websockets and the static web chat."""
