"""The poll back-off's cap (issue 14, item 8): max(60 s, 10 poll periods) unless configured."""
from __future__ import annotations

import random
from datetime import timedelta

from ven.oadr import Backoff, VenOpenADRClient


async def _noop(request_id, events):
    return []


def client(**kwargs) -> VenOpenADRClient:
    return VenOpenADRClient(ven_name="v", vtn_url="http://127.0.0.1:1/OpenADR2/Simple/2.0b",
                            distribute_handler=_noop, **kwargs)


async def test_default_cap_is_sixty_seconds_or_ten_poll_periods():
    c = client()
    c.poll_frequency = timedelta(seconds=1)
    assert c.poll_backoff_cap_s() == 60.0
    c.poll_frequency = timedelta(seconds=30)
    assert c.poll_backoff_cap_s() == 300.0
    assert client(max_backoff_s=12.5).poll_backoff_cap_s() == 12.5


async def test_delays_stay_under_the_cap_minus_one_period_and_reset():
    c = client()
    c.poll_frequency = timedelta(seconds=1)
    c.poll_backoff.rng = random.Random(3)
    delays = [c.poll_backoff.failed() for _ in range(40)]
    assert max(delays) <= 59.0 and max(delays) > 29.0     # it grows, then stops at cap - period
    c.poll_frequency = timedelta(seconds=10)              # the cap follows the VTN's poll period
    assert c.poll_backoff.failed() <= 90.0
    c.poll_backoff.succeeded()
    assert c.poll_backoff.failures == 0 and c.poll_backoff.ready()


def test_backoff_never_exceeds_its_maximum():
    b = Backoff(1.0, 5.0, random.Random(1))
    assert all(b.failed() <= 5.0 for _ in range(100))
