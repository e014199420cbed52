"""A simulated EV and charger hardware behind the hal interfaces."""
