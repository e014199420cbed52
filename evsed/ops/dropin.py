"""The safety daemon's drop-in derived from the config: which device nodes it may open, and the
network only when a device is reached over it (a Modbus TCP meter, the pigpio daemon).

The unit itself allows no device and only AF_UNIX; this adds exactly what the config names.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from evsed.config import Config, Device

STATE_DIR, RUNTIME_DIR = "/var/lib/evsed", "/run/evsed"
# USB serial adapters come and go and may come back under another number (ttyUSB0 -> ttyUSB1):
# those are allowed by their driver's device class, which survives that, not by one node.
_USB_SERIAL_CLASSES = ("char-ttyUSB", "char-ttyACM")
_GPIOCHIPS = ("/dev/gpiochip0", "/dev/gpiochip4")  # the SoC's GPIOs (gpiochip4: a Pi 5, older kernels)


@dataclass
class Needs:
    devices: dict[str, str] = field(default_factory=dict)  # node or class -> "r" / "rw"
    writable: list[str] = field(default_factory=list)  # paths beyond the state and runtime directories
    hosts: list[str] = field(default_factory=list)  # TCP peers (addresses or names)
    environment: dict[str, str] = field(default_factory=dict)
    why: list[str] = field(default_factory=list)

    def allow(self, node: str, why: str, mode: str = "rw") -> None:
        if node not in self.devices:
            self.devices[node] = mode
            self.why.append(f"{node}: {why}")


def needs(cfg: Config) -> Needs:
    """What the configured devices need from the sandbox."""
    n = Needs()
    for conn in cfg.connectors:
        for kind, dev in (("pilot", conn.pilot), ("contactor", conn.contactor), ("rcd", conn.rcd),
                          ("meter", conn.meter)):
            if dev is not None:
                _device(n, f"connector {conn.id} {kind}", dev)
    if cfg.site.meter is not None:
        _device(n, "site meter", cfg.site.meter)
    if cfg.rfid is not None:
        _device(n, "card reader", cfg.rfid)
    for path in (cfg.store.state_dir, cfg.store.runtime_dir):
        if str(path) not in (STATE_DIR, RUNTIME_DIR):
            n.writable.append(str(path))
    return n


def _device(n: Needs, what: str, dev: Device) -> None:
    o = dev.options
    if "pin_factory" in o and dev.backend == "gpio":
        _pins(n, what, o["pin_factory"])
    if dev.backend == "gpio" and "adc" in o:  # the pilot
        if o["pwm"] == "sysfs":
            n.writable.append(f"{o['sysfs_root']}/pwmchip{o['pwmchip']}")
        n.allow(f"/dev/spidev{o['spi_bus']}.{o['spi_device']}", f"{what}: the {o['adc']} on SPI")
    elif dev.backend == "rc522":
        n.allow(f"/dev/spidev{o['spi_bus']}.{o['spi_device']}", f"{what}: the MFRC522 on SPI")
        n.allow("/dev/gpiomem", f"{what}: its reset pin (RPi.GPIO, under the mfrc522 package)")
    elif dev.backend == "modbus" and o["transport"] == "tcp":
        n.hosts.append(o["host"])
        n.why.append(f"network to {o['host']}:{o['tcp_port']}: {what} over Modbus TCP")
    elif dev.backend == "hid":
        n.allow("char-input", f"{what}: a USB keyboard-type reader ({o['device'] or o['name']})")
    elif "port" in o and (dev.backend != "modbus" or o["transport"] == "rtu"):
        _serial(n, what, o["port"])


def _pins(n: Needs, what: str, factory: str) -> None:
    if factory == "lgpio":
        for chip in _GPIOCHIPS:
            n.allow(chip, f"{what}: GPIO lines through lgpio")
        n.environment["LG_WD"] = RUNTIME_DIR  # lgpio keeps its notification pipes in its working directory
    elif factory in ("rpigpio", "native"):
        n.allow("/dev/gpiomem", f"{what}: GPIO registers through {factory}")
    elif factory == "pigpio":
        n.hosts.append("127.0.0.1")
        n.why.append(f"network to localhost:8888: {what} through the pigpio daemon")


def _serial(n: Needs, what: str, port: str) -> None:
    name = port.rsplit("/", 1)[-1]
    if name.startswith(("ttyUSB", "ttyACM")) or "/serial/by-" in port:
        for cls in _USB_SERIAL_CLASSES:
            n.allow(cls, f"{what}: USB serial adapter {port} (by class: it may come back renumbered)")
    else:
        n.allow(port, f"{what}: serial port")


def render(cfg: Config, shown_path: str) -> str:
    """The drop-in's text: a comment for every line, so the host sees why each is there."""
    n = needs(cfg)
    out = [f"# Written by `evsed install` from {shown_path}; run it again after changing",
           "# the devices there. Your own changes belong in another file of this directory.", "[Service]"]
    out += [f"# {why}" for why in n.why] or ["# no device nodes: every configured device is simulated"]
    out += [f"DeviceAllow={node} {mode}" for node, mode in n.devices.items()]
    for path in n.writable:
        out.append(f"ReadWritePaths=-{path}")
    for key, value in n.environment.items():
        out.append(f"Environment={key}={value}")
    if n.hosts:
        out += ["PrivateNetwork=no", "RestrictAddressFamilies=AF_INET AF_INET6"]
        if all(_is_address(h) for h in n.hosts):
            out += [f"IPAddressAllow={h}" for h in dict.fromkeys(n.hosts)]
        else:  # a name: its address (and the resolver's) is not known here
            out += ["# a host given by name: no address allow list", "IPAddressDeny="]
    return "\n".join(out) + "\n"


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
