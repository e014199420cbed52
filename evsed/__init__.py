"""evsed: a controller daemon for a stand-alone EV charger."""

__version__ = "0.1.0"
