"""The OCPP uplink: a service process beside the safety daemon, talking to it over the control
socket (evsed.uplink.service.serve), imported only when the config has an [ocpp] section.
A version-neutral core (this package's modules) under one adapter per OCPP version (v16/)."""
