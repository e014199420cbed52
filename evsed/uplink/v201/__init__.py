"""The OCPP 2.0.1 adapter of the uplink: the device model, TransactionEvent mapping, the CSMS's
calls and the messages the charging station sends, over the version-neutral uplink core."""
