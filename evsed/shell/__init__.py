"""The charger shell: builds devices, feeds hardware input to the core, performs its actions,
publishes every charger event to subscribers, and runs the daemon."""
