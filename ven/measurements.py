"""OpenADR itemBase objects we send, built fresh (openleadr's `add_report(scale=…)`
mutates module-global measurement objects, so we never use the shared ones)."""
from __future__ import annotations

from openleadr import objects


def real_power_kw() -> objects.Measurement:
    """powerReal in kW (unit W with siScaleCode k). Positive = consumption (import)."""
    return objects.Measurement(
        name="powerReal", description="RealPower", unit="W", scale="k",
        power_attributes=objects.PowerAttributes(hertz=60, voltage=240, ac=True))
