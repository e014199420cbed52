"""Control pilot voltage through an MCP3008/MCP3208 SPI ADC: a burst of samples -> PilotReading.

The conversion chain is ADC counts -> volts at the ADC pin -> volts at the connector (the board's divider).
"""

from __future__ import annotations

import errno
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from hal import DeviceUnavailable, PilotReading, TryAgain

# Bits per conversion of the supported chips.
ADC_BITS = {"mcp3008": 10, "mcp3208": 12}


class CountSource(Protocol):
    """One single-ended conversion per call, in ADC counts (0 .. 2**bits - 1)."""

    bits: int

    def read_counts(self) -> int: ...

    def close(self) -> None: ...


def mcp_request(chip: str, channel: int) -> list[int]:
    """The three bytes that start a single-ended conversion of `channel` (datasheet, figure 6-1)."""
    if chip == "mcp3008":
        return [0x01, 0x80 | (channel << 4), 0x00]
    return [0x06 | (channel >> 2), (channel & 0x03) << 6, 0x00]


def mcp_counts(chip: str, reply: list[int]) -> int:
    """The conversion result in the three bytes clocked back during mcp_request."""
    if chip == "mcp3008":
        return ((reply[1] & 0x03) << 8) | reply[2]
    return ((reply[1] & 0x0F) << 8) | reply[2]


class SpidevADC:
    """MCP3x08 through the kernel's spidev driver (/dev/spidevB.D), one xfer2 per sample.

    `spi_class` is the spidev.SpiDev interface (open, xfer2, close, max_speed_hz, mode);
    it defaults to the real spidev package, imported here so nothing else needs it.
    """

    def __init__(self, chip: str, bus: int, device: int, channel: int, speed_hz: int,
                 spi_class: Callable[[], Any] | None = None):
        self.chip, self.channel, self.bits = chip, channel, ADC_BITS[chip]
        path = f"/dev/spidev{bus}.{device}"
        if spi_class is None:
            try:
                import spidev
            except ImportError as exc:
                raise DeviceUnavailable(
                    "pilot adc_driver = \"spidev\" needs the Python package spidev: pip install spidev "
                    "(or apt install python3-spidev), or set adc_driver = \"gpiozero\"") from exc
            spi_class = spidev.SpiDev
        self._spi = spi_class()
        try:
            self._spi.open(bus, device)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                hint = "enable SPI with dtparam=spi=on in /boot/firmware/config.txt and reboot"
            elif exc.errno in (errno.EACCES, errno.EPERM):
                hint = "run evsed as a user in the spi group (a group change needs a new login)"
            else:
                hint = "see the kernel log (dmesg)"
            raise DeviceUnavailable(f"cannot open {path}: {exc.strerror or exc}; {hint}") from exc
        self._spi.max_speed_hz = speed_hz
        self._spi.mode = 0
        self._request = mcp_request(chip, channel)

    def read_counts(self) -> int:
        return mcp_counts(self.chip, self._spi.xfer2(list(self._request)))

    def close(self) -> None:
        self._spi.close()


class GpiozeroADC:
    """MCP3x08 through gpiozero's MCP3008/MCP3208 classes on an explicit pin factory.

    gpiozero falls back to bit-banged SPI with only a warning when the hardware SPI
    cannot open; here that warning is an error, so a misconfigured board fails at start.
    """

    def __init__(self, chip: str, bus: int, device: int, channel: int, pin_factory):
        import gpiozero
        from gpiozero.exc import SPISoftwareFallback

        cls = {"mcp3008": gpiozero.MCP3008, "mcp3208": gpiozero.MCP3208}[chip]
        self.bits = ADC_BITS[chip]
        # gpiozero 2.0.1's SPISoftwareBus (the mock factory's SPI) ignores pin_factory and
        # loads the default factory chain; lend it ours so nothing else is tried.
        lend = gpiozero.Device.pin_factory is None
        if lend:
            gpiozero.Device.pin_factory = pin_factory
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", SPISoftwareFallback)
                self.device = cls(channel=channel, port=bus, device=device, pin_factory=pin_factory)
        except SPISoftwareFallback as exc:
            raise DeviceUnavailable(
                f"hardware SPI {bus}.{device} unavailable for the {chip} ({exc}); enable SPI with "
                "dtparam=spi=on in /boot/firmware/config.txt and check the spi group") from exc
        finally:
            if lend and gpiozero.Device.pin_factory is pin_factory:
                gpiozero.Device.pin_factory = None

    def read_counts(self) -> int:
        return self.device.raw_value

    def close(self) -> None:
        self.device.close()


@dataclass(frozen=True)
class Scale:
    """The board's divider: volts at the connector = (counts / full_scale * vref_v - offset_v) * gain."""

    vref_v: float
    offset_v: float
    gain: float
    bits: int

    def volts(self, counts: float) -> float:
        full_scale = (1 << self.bits) - 1
        return (counts / full_scale * self.vref_v - self.offset_v) * self.gain


def percentile(sorted_values: list[int], pct: float) -> int:
    """Nearest-rank percentile of an ascending list; pct in 0..100."""
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class BurstSampler:
    """Samples the CP at random phases over at least one PWM period and keeps both plateaus.

    Sampling is not synchronised to the PWM: Python's per-sample jitter spreads the
    samples over the period, so with enough of them the top percentile lies on the
    high plateau and the bottom one on the low plateau, skipping edges and single
    spikes. With duty 10 % (6 A) or 96 % (80 A) only one sample in ten or twenty-five
    lands on the short plateau, which is why the defaults take 100 samples at the
    98th and 2nd percentile.
    """

    def __init__(self, source: CountSource, scale: Scale, *, samples: int = 100,
                 high_pct: float = 98.0, low_pct: float = 2.0, window_s: float = 0.001,
                 clock: Callable[[], float] = time.perf_counter):
        self.source, self.scale = source, scale
        self.samples, self.high_pct, self.low_pct = samples, high_pct, low_pct
        self.window_s, self.clock = window_s, clock
        self.max_samples = samples * 20  # bound the burst if the clock barely moves

    def burst(self) -> list[int]:
        """At least `samples` conversions spanning at least `window_s`, in counts."""
        out: list[int] = []
        start = self.clock()
        while len(out) < self.max_samples and (
                len(out) < self.samples or self.clock() - start < self.window_s):
            out.append(self.source.read_counts())
        return out

    def read(self) -> PilotReading:
        """The CP's high and low plateau in volts; TryAgain when the ADC sits at a rail."""
        counts = sorted(self.burst())
        high, low = percentile(counts, self.high_pct), percentile(counts, self.low_pct)
        full_scale = (1 << self.scale.bits) - 1
        # A rail means the divider saturated or the ADC is not answering (MISO stuck):
        # the true voltage is unknown, which must not read as a valid state.
        if high >= full_scale or low <= 0:
            raise TryAgain(f"pilot ADC at a rail (counts {low}..{high} of 0..{full_scale}): "
                           "ADC not answering or the divider's range exceeded")
        return PilotReading(round(self.scale.volts(high), 3), round(self.scale.volts(low), 3))

    def close(self) -> None:
        self.source.close()
