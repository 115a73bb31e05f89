"""The device side: the workspace walk and ignore rules, the SQLite index, durable file writes, folders
opened without following links, and the temp files of pulls. Nothing here talks to the server."""
