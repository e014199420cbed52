"""The OCPP 1.6J adapter on the uplink's version-neutral core: strict 1.6 framing, the CSMS's
requests (handlers), the configuration keys, the message and charging-profile mapping."""
