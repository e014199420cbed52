"""The control socket: the daemon's only door, a Unix socket speaking JSON lines.

server.py answers inside the safety daemon; client.py is what the CLI and service processes use.
"""
