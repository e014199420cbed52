"""The OCPP 1.6J uplink: a service process beside the safety daemon, talking to it over the
control socket (evsed.uplink.service.serve), imported only when the config has an [ocpp] section."""
