"""The local web page: a service process beside the daemon, reaching it only over the control socket.

settings.py parses [web] without h11; service.py and httpd.py (the server) import h11, so only when configured.
"""
