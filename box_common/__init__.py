"""Pieces shared by the Box client and server: path rules and the block wire format."""
