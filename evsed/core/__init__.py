"""The pure charging core: pilot arithmetic, events and actions, connector state, step().

Nothing here imports outside the standard library and evsed.core; time is an argument.
"""
