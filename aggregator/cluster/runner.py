"""`v2x run` with `[cluster] enabled`: one of several instances on one PostgreSQL.

Every instance is a standby for its partition (the VEN account it serves) until
it takes the partition's lease; the leaseholder runs the partition's work, the
same `run_service` as on one machine (VEN, dispatcher loop, ledger), with two
changes made by `Member.attach`: its commands go through the station command
table (fenced) and its ledger writes are fenced. It renews the lease every third
of the lease period and stops the partition's work as soon as it cannot (or a
fenced write finds a newer token), then stands by again. A standby polls the
lease every sixth of the period, so a dead leaseholder is replaced within one
lease period (plus one poll) of its last renewal.

Stations: with OCPP, every instance runs a CSMS (a load balancer spreads the
sockets) whose events are relayed to the leaseholder through the database and
whose `Gateway` carries out the commands addressed to it. With
`--simulated-fleet`, the simulated stations belong to the leaseholder's process
(they resume from the ledger at every takeover) and its own gateway commands them.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from datetime import datetime, timedelta, timezone

from aggregator.cluster.commands import CommandRelay, ConnectionTable, Gateway, prune_commands
from aggregator.cluster.fenced_ledger import FencedLedgerWriter
from aggregator.cluster.lease import Lease, owner_name
from aggregator.cluster.notify import Listener
from aggregator.cluster.relay import RelayReader, RelaySink, events_channel, prune_events
from aggregator.config import ConfigError, Settings
from aggregator.store.db import make_engine

log = logging.getLogger(__name__)
KEEP_QUEUES = timedelta(hours=1)     # answered commands and relayed events older than this are pruned


def instance_id_of(settings: Settings) -> str:
    return settings.cluster.instance_id or os.environ.get("HOSTNAME") or socket.gethostname()


def partition_of(settings: Settings) -> str:
    return settings.cluster.partition or settings.ven.ven_name


class Member:
    """This instance's part in the cluster: its lease on the partition and what the
    leaseholder's work is wired through."""

    def __init__(self, settings: Settings, engine, say=print):
        self.settings = settings
        self.engine = engine
        self.say = say
        self.instance_id = instance_id_of(settings)
        self.partition = partition_of(settings)
        self.lease = Lease(engine, self.partition, owner_name(self.instance_id), settings.cluster.lease_seconds)
        self.lost = False
        self.partition_stop: asyncio.Event | None = None
        self._tasks: list[asyncio.Task] = []      # the leaseholder's (cancelled when it stops)
        self.relay: CommandRelay | None = None
        self.gateway: Gateway | None = None

    # -- the leaseholder's wiring (called from run_service) -----------------------------------
    def attach_stations(self, app) -> str:
        """OCPP: the stations are on every instance's CSMS; their events come through the database."""
        app.registry.load()
        reader = RelayReader(self.engine, app.registry)
        listener = Listener(self.engine, [events_channel(self.partition)], reader.on_notify, reader.read)
        self._spawn(listener.run())
        self._spawn(_every(1.0, reader.read))
        connections = ConnectionTable(self.engine, self.instance_id)
        app.use_chargers(CommandRelay(self.engine, self.lease, connections.gateways, on_fenced=self._fenced))
        return "stations over OCPP on every instance (relayed through the database)"

    def attach(self, app) -> None:
        """Fence the leaseholder's writes; with a simulated fleet, command it through our own gateway."""
        port = app.dispatcher.port
        if not isinstance(port, CommandRelay):     # the simulation: its stations' sockets are ours
            self.gateway = Gateway(self.engine, self.instance_id, port)
            me = self.instance_id
            app.use_chargers(CommandRelay(self.engine, self.lease, lambda ids: {i: me for i in ids},
                                          on_fenced=self._fenced))
            gateway_listener = Listener(self.engine, [self.gateway.channel], self.gateway.on_notify,
                                        self.gateway.on_connect)
            self._spawn(gateway_listener.run())
            self._spawn(self.gateway.run())
        self.relay = app.dispatcher.port
        acks = Listener(self.engine, [self.relay.channel], self.relay.on_notify, self.relay.collect)
        self._spawn(acks.run())
        fenced = FencedLedgerWriter(self.engine, self.lease, app.metrics, on_fenced=self._fenced)
        app.dispatcher.observers = [fenced if o is app.ledger else o for o in app.dispatcher.observers]
        app.ledger = fenced
        self.say(f"partition {self.partition}: leaseholder {self.lease.owner}, fencing token {self.lease.token}")

    def _spawn(self, coroutine) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coroutine))

    def _fenced(self) -> None:
        self.lost = True
        if self.partition_stop is not None:
            self.partition_stop.set()

    async def detach(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks.clear()

    # -- the lease -----------------------------------------------------------------------------
    async def wait_for_lease(self, stop: asyncio.Event) -> bool:
        poll = self.settings.cluster.lease_seconds / 6
        announced = False
        while not stop.is_set():
            try:
                if self.lease.try_acquire() is not None:
                    return True
            except Exception as err:   # the database is away: keep standing by
                log.warning("lease poll failed (%s)", err.__class__.__name__)
            if not announced:
                current = _quiet(self.lease.current)
                self.say(f"standby for partition {self.partition} (lease held by {current[0] if current else '?'})")
                announced = True
            # poll, but be there the moment the lease as it stands runs out
            left = _quiet(self.lease.seconds_left)
            wait = poll if left is None else min(poll, max(0.05, left + 0.05))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
        return False

    async def keep_lease(self) -> None:
        """Renew every third of the period; stop the partition's work when the lease is not ours."""
        period = self.settings.cluster.lease_seconds
        while not self.partition_stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.partition_stop.wait(), period / 3 if self.lease.held() else period / 12)
            if self.partition_stop.is_set():
                return
            try:
                renewed = self.lease.try_acquire()
            except Exception as err:
                log.warning("lease renewal failed (%s)", err.__class__.__name__)
                renewed = self.lease.token if self.lease.held() else None
            if renewed is None or not self.lease.held():
                self.say(f"partition {self.partition}: lease lost; stopping its dispatcher")
                self._fenced()
                return


async def run_clustered(settings: Settings, run_service, *, simulated_fleet: bool,
                        stop: asyncio.Event | None = None, tick: timedelta = timedelta(milliseconds=500),
                        say=print) -> None:
    if not settings.database.url.startswith("postgresql"):
        raise ConfigError("[cluster] enabled needs a postgresql:// database (instances share it)")
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()

    def handle_signals() -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)

    handle_signals()
    engine = make_engine(settings.database.url)
    member = Member(settings, engine, say)
    gateway_tasks: list[asyncio.Task] = []
    csms = sink = None
    try:
        if not simulated_fleet:   # this instance's share of the station sockets
            csms, sink = await _start_gateway(settings, engine, member, gateway_tasks)
            say(f"OCPP CSMS on {csms.url}<station id> (instance {member.instance_id})")
        gateway_tasks.append(loop.create_task(_every(60.0, lambda: _prune(engine))))
        while not stop.is_set():
            standby = await _StandbyHealth.start(settings, say)
            try:
                if not await member.wait_for_lease(stop):
                    break
            finally:
                await standby.stop()     # the leaseholder's own API serves the probes from here on
            member.lost = False
            member.partition_stop = partition_stop = asyncio.Event()
            relay_stop = loop.create_task(_copy_event(stop, partition_stop))
            keeper = loop.create_task(member.keep_lease())
            try:
                await run_service(settings, simulated_fleet=simulated_fleet, stop=partition_stop, tick=tick,
                                  say=say, member=member)
            finally:
                partition_stop.set()
                for task in (relay_stop, keeper):
                    task.cancel()
                await member.detach()
                handle_signals()     # run_service removed its handlers
            if not member.lost:
                break
            say(f"partition {member.partition}: standing by again")
    finally:
        for task in gateway_tasks:
            task.cancel()
        if csms is not None:
            await csms.stop()
        if sink is not None:
            with contextlib.suppress(Exception):
                sink.connections.forget_mine()
        with contextlib.suppress(Exception):
            member.lease.release()
        engine.dispose()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def _start_gateway(settings: Settings, engine, member: Member, tasks: list):
    from aggregator.ocpp.credentials import StationDirectory
    from aggregator.ocpp.csms import Csms
    from aggregator.ocpp.handshake import server_ssl_context
    o = settings.ocpp
    sink = RelaySink(engine, member.instance_id, member.partition)
    sink.connections.forget_mine()     # a previous life of this instance held nothing now
    csms = Csms(sink, StationDirectory.from_database(engine), host=o.host, port=o.port,
                security_profile=o.security_profile,
                ssl_context=server_ssl_context(o.security_profile, o.cert_file, o.key_file, o.ca_file),
                command_timeout=o.command_timeout_s)
    await csms.start()
    gateway = Gateway(engine, member.instance_id, csms)
    listener = Listener(engine, [gateway.channel], gateway.on_notify, gateway.on_connect)
    loop = asyncio.get_running_loop()
    tasks += [loop.create_task(listener.run()), loop.create_task(gateway.run()),
              loop.create_task(_every(1.0, sink.flush))]
    return csms, sink


class _StandbyHealth:
    """While standing by there is no API: /healthz and /readyz answer on its port anyway
    (200, role standby), so probes neither restart a standby nor keep it out of the
    Service that spreads station sockets."""

    def __init__(self, runner=None):
        self.runner = runner

    @classmethod
    async def start(cls, settings: Settings, say) -> "_StandbyHealth":
        from aiohttp import web
        api = getattr(settings, "api", None)
        host = getattr(api, "host", None) or settings.metrics.host
        port = int(getattr(api, "port", None) or os.environ.get("V2X_API_PORT") or 8088)

        async def answer(_request):
            return web.json_response({"status": "ok", "ready": True, "role": "standby"})

        app = web.Application()
        app.router.add_get("/healthz", answer)
        app.router.add_get("/readyz", answer)
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as err:
            log.warning("standby probes not served on %s:%s (%s)", host, port, err)
        return cls(runner)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def _copy_event(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()


async def _every(seconds: float, action) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            action()
        except Exception:
            log.exception("periodic %s failed", getattr(action, "__name__", action))


def _prune(engine) -> None:
    older = datetime.now(timezone.utc) - KEEP_QUEUES
    prune_commands(engine, older)
    prune_events(engine, older)


def _quiet(function):
    try:
        return function()
    except Exception:
        return None
