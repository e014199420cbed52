"""Putting evsed on a board and keeping it current: install, uninstall, signed updates with rollback.

Everything here acts on a file-system root (/ on the board, a temporary directory in tests),
so each step can be shown, tested and reversed; nothing here runs in the safety daemon.
"""
