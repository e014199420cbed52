"""The service processes beside the safety daemon: the OCPP uplink, MQTT, the web page.

They face the network and parse untrusted input, so they run in their own processes and
reach the charger only through the control socket (link.py). Nothing here touches a device.
"""
