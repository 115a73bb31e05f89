"""server_min: the thin HTTP chunk and metadata service behind Box."""

API_VERSION = "v1"
