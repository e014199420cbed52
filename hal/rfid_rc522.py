"""RC522 (NXP MFRC522) reader on SPI through the mfrc522 package's low-level MFRC522 API:
REQA/WUPA request, anticollision (cascade level 2 for 7-byte UIDs), polled in a worker thread.

mfrc522 (with spidev and RPi.GPIO) is imported only when this backend is built.
"""

from __future__ import annotations

import errno
from typing import Any

import structlog

from hal import DeviceUnavailable, TryAgain, canonical_uid
from hal.rfid import PollingReader, _clock

log = structlog.get_logger()

CASCADE_TAG = 0x88  # first UID byte at cascade level 1 when the UID has 7 bytes
ANTICOLL_CL2 = 0x95
GPIO_BCM = 11  # RPi.GPIO.BCM: reset_pin is a BCM GPIO number whatever mfrc522 defaults to
# VersionReg: 0x91/0x92 genuine MFRC522 v1/v2, 0x88 FM17522, 0x12/0xB2 common clones.
KNOWN_VERSIONS = {0x12, 0x88, 0x90, 0x91, 0x92, 0xB2}


def _bcc_ok(five: list[int]) -> bool:
    return len(five) == 5 and five[0] ^ five[1] ^ five[2] ^ five[3] == five[4]


def read_uid(chip) -> str | None:
    """One poll: the UID of a card in the field, or None.

    WUPA (PICC_REQALL) rather than REQA so a card left in HALT still answers. The card is
    never selected at its last cascade level, so it drops back to IDLE on the next request
    and a held card answers every other poll: enough, as presence is judged by hold_off_s."""
    status, _ = chip.MFRC522_Request(chip.PICC_REQALL)
    if status != chip.MI_OK:
        return None
    status, level1 = chip.MFRC522_Anticoll()
    if status != chip.MI_OK or not _bcc_ok(level1):
        return None  # collision or a corrupt answer: the next poll tries again
    if level1[0] != CASCADE_TAG:
        return canonical_uid(bytes(level1[:4]))
    # 7-byte UID: select at level 1, then anticollision at level 2 (ISO 14443-3 6.5.3).
    if not chip.MFRC522_SelectTag(level1):
        return None
    chip.Write_MFRC522(chip.BitFramingReg, 0x00)
    status, level2, _ = chip.MFRC522_ToCard(chip.PCD_TRANSCEIVE, [ANTICOLL_CL2, 0x20])
    if status != chip.MI_OK or not _bcc_ok(level2):
        return None
    return canonical_uid(bytes(level1[1:4] + level2[:4]))


def _import_mfrc522():
    try:
        from mfrc522 import MFRC522
    except ImportError as exc:
        raise DeviceUnavailable(
            "rfid rc522: needs the Python package mfrc522 (with spidev and RPi.GPIO): "
            f"pip install mfrc522 ({exc})") from exc
    except RuntimeError as exc:  # RPi.GPIO refuses to load off a Raspberry Pi
        raise DeviceUnavailable(f"rfid rc522: mfrc522 cannot load RPi.GPIO: {exc}") from exc
    return MFRC522


def open_chip(bus: int, device: int, reset_pin: int, speed_hz: int):
    """Build the mfrc522 MFRC522 object; failures name the device file and the fix."""
    mfrc522_class = _import_mfrc522()
    path = f"/dev/spidev{bus}.{device}"
    try:
        chip = mfrc522_class(bus=bus, device=device, spd=speed_hz, pin_mode=GPIO_BCM,
                             pin_rst=reset_pin)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            why = ("no such device file: enable SPI (raspi-config nonint do_spi 0, or "
                   "dtparam=spi=on in config.txt) and check spi_bus/spi_device")
        elif exc.errno == errno.EACCES:
            why = "permission denied: add the evsed user to the spi and gpio groups"
        else:
            why = str(exc)
        raise DeviceUnavailable(f"rfid rc522: cannot open {path}: {why}") from exc
    except (RuntimeError, ValueError) as exc:  # RPi.GPIO: no access to /dev/gpiomem, mode clash
        raise DeviceUnavailable(f"rfid rc522: cannot drive reset pin GPIO{reset_pin}: {exc}") from exc
    version = chip.Read_MFRC522(chip.VersionReg)
    if version not in KNOWN_VERSIONS:
        _close_spi(chip)
        raise DeviceUnavailable(
            f"rfid rc522: no MFRC522 answers on {path} (version register reads {version:#04x}): "
            "check wiring (SDA to CE0/CE1, MISO, MOSI, SCK, 3.3 V) and spi_device")
    log.info("rfid.reader_found", reader="rc522", spi=path, version=f"{version:#04x}")
    return chip


def _close_spi(chip) -> None:
    # Not Close_MFRC522(): it calls GPIO.cleanup(), which would reset every pin this
    # process drives through RPi.GPIO, the contactor's included.
    spi = getattr(chip, "spi", None)
    if spi is not None:
        spi.close()


def rc522_poll(chip):
    """Wrap read_uid so SPI errors become TryAgain for the polling thread."""
    def poll() -> str | None:
        try:
            return read_uid(chip)
        except OSError as exc:
            raise TryAgain(f"rfid rc522: SPI transfer failed: {exc}") from exc
    return poll


def rc522_reader(options: dict[str, Any], ctx) -> PollingReader:
    """Factory for the "rc522" backend: options spi_bus, spi_device, reset_pin, spi_speed_hz,
    poll_interval_s, hold_off_s."""
    chip = open_chip(options["spi_bus"], options["spi_device"], options["reset_pin"],
                     options["spi_speed_hz"])
    return PollingReader("rc522", rc522_poll(chip), options["poll_interval_s"],
                         options["hold_off_s"], _clock(ctx), close=lambda: _close_spi(chip))
