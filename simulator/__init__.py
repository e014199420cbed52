"""A simulated EV and charger hardware behind the hal interfaces."""

# The faults `evsed sim fault KIND` injects (simulator.hardware); here, so the CLI's help lists
# them without importing the simulator.
FAULT_KINDS = ("rcd", "welded", "stuck-open", "pilot-short", "pilot-lost", "meter", "diode",
               "ev-error", "self-test")
