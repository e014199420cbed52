"""PWM outputs for the control pilot: the kernel's hardware PWM through sysfs, or gpiozero.

Both take a duty as a fraction 0..1 of the period; the pilot backend in hal/gpio.py maps IEC 61851 duty to it.
"""

from __future__ import annotations

import errno
import time
from pathlib import Path
from typing import Callable

from hal import DeviceUnavailable

SYSFS_ROOT = "/sys/class/pwm"
DTOVERLAY_HINT = ("enable the hardware PWM in /boot/firmware/config.txt: dtoverlay=pwm (one channel) "
                  "or dtoverlay=pwm-2chan (PWM0 and PWM1), then reboot")


def sysfs_error(path: Path, exc: OSError, action: str) -> DeviceUnavailable:
    """A DeviceUnavailable that names the file, what failed and what the installer can do about it."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        hint = ("run evsed as a user in the gpio group; on Raspberry Pi OS the udev rule "
                "99-com.rules gives that group the PWM files (a group change needs a new login)")
    elif exc.errno == errno.ENOENT:
        hint = DTOVERLAY_HINT
    elif exc.errno == errno.EBUSY:
        hint = "another program (or a second evsed) uses this PWM channel"
    elif exc.errno == errno.EINVAL:
        hint = "the PWM driver refused the value (duty longer than the period, or a channel the chip lacks)"
    else:
        hint = "see the kernel log (dmesg)"
    detail = exc.strerror or str(exc)
    return DeviceUnavailable(f"cannot {action} {path}: {detail}; {hint}")


class SysfsPWM:
    """One channel of /sys/class/pwm/pwmchipN, exported on open and left disabled on release.

    The hardware times the edges, so the duty does not jitter with Python's scheduling.
    After an export the kernel creates pwmM/ and udev fixes its permissions a moment
    later; `sleep` and `export_timeout_s` bound that wait (tests inject a sleep that
    plays the kernel's part).
    """

    def __init__(self, root: str | Path = SYSFS_ROOT, chip: int = 0, channel: int = 0,
                 frequency_hz: float = 1000.0, *, export_timeout_s: float = 2.0,
                 sleep: Callable[[float], None] = time.sleep):
        self.chip_dir = Path(root) / f"pwmchip{chip}"
        self.dir = self.chip_dir / f"pwm{channel}"
        self.period_ns = round(1e9 / frequency_hz)
        self.duty_step_pct = 100.0 / self.period_ns  # the duty is set in whole nanoseconds
        self._duty_ns: int | None = None
        if not self.chip_dir.is_dir():
            raise DeviceUnavailable(
                f"no PWM chip {self.chip_dir} (pilot pwmchip = {chip}); {DTOVERLAY_HINT}; "
                f"`ls {Path(root)}` lists the chips this kernel has")
        if not self.dir.is_dir():
            self._write(self.chip_dir / "export", str(channel), "export a channel through")
            self._wait_for_export(export_timeout_s, sleep)
        # The kernel (pwm_apply_state, up to 6.x) refuses every write that leaves a zero
        # period or a duty longer than the period, and a fresh export has period 0:
        # so the period goes first, after shortening a leftover longer duty.
        if int(self._read(self.dir / "duty_cycle") or 0) > self.period_ns:
            self._write(self.dir / "duty_cycle", "0", "set the duty of")
        if int(self._read(self.dir / "period") or 0) != self.period_ns:
            self._write(self.dir / "period", str(self.period_ns), "set the period of")
        polarity = self.dir / "polarity"
        if polarity.exists() and self._read(polarity) != "normal":
            self._write(self.dir / "enable", "0", "disable")  # drivers change polarity only when off
            self._write(polarity, "normal", "set the polarity of")

    def _wait_for_export(self, timeout_s: float, sleep: Callable[[float], None]) -> None:
        step_s, waited_s = 0.01, 0.0
        enable = self.dir / "enable"
        while True:
            try:
                with open(enable, "w"):
                    return
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.EACCES, errno.EPERM) or waited_s >= timeout_s:
                    raise sysfs_error(enable, exc, "open (after export)") from exc
            sleep(step_s)
            waited_s += step_s

    def _write(self, path: Path, text: str, action: str) -> None:
        try:
            with open(path, "w") as f:
                f.write(text)
        except OSError as exc:
            raise sysfs_error(path, exc, action) from exc

    def _read(self, path: Path) -> str:
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise sysfs_error(path, exc, "read") from exc

    def set_duty(self, fraction: float) -> None:
        """Run the PWM with `fraction` (0..1) of each period high; 0 and 1 give a steady level."""
        duty_ns = round(min(max(fraction, 0.0), 1.0) * self.period_ns)
        if duty_ns != self._duty_ns:
            self._write(self.dir / "duty_cycle", str(duty_ns), "set the duty of")
            if self._duty_ns is None:
                self._write(self.dir / "enable", "1", "enable")
            self._duty_ns = duty_ns

    def release(self) -> None:
        """Output low (the pilot's -12 V, state F) and the channel disabled; it stays exported."""
        try:
            self._write(self.dir / "duty_cycle", "0", "set the duty of")
        finally:
            self._write(self.dir / "enable", "0", "disable")
            self._duty_ns = None


class GpiozeroPWM:
    """gpiozero's PWMOutputDevice on a pin factory the caller chose.

    The fallback for boards without a usable hardware PWM: with the lgpio factory the
    edges are timed by a software thread, so the duty jitters by some microseconds.
    """

    def __init__(self, pin: int, pin_factory, frequency_hz: float = 1000.0):
        from gpiozero import PWMOutputDevice

        self.device = PWMOutputDevice(pin, frequency=frequency_hz, initial_value=0.0,
                                      pin_factory=pin_factory)
        self.duty_step_pct = 1e-4 * frequency_hz  # software PWM (lgpio) times its edges in whole microseconds

    def set_duty(self, fraction: float) -> None:
        """Run the PWM with `fraction` (0..1) of each period high."""
        self.device.value = min(max(fraction, 0.0), 1.0)

    def release(self) -> None:
        try:
            self.device.value = 0.0
        finally:
            self.device.close()
