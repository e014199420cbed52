"""The local web page: a service process beside the daemon, reaching it only over the control socket.

settings.py parses [web] without aiohttp; service.py (the server) imports aiohttp, so only when configured.
"""
