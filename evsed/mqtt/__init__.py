"""The MQTT service: charger state and events to an MQTT broker, commands back, Home Assistant discovery.

A separate process on the control socket (never in the safety path); aiomqtt is imported by service.py only.
"""
