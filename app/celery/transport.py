"""kombu's Redis transport with an atomic fetch, so a killed worker cannot lose a message.

Stock kombu fetches with `BRPOP` and only then, in a second round trip, records the message in
the `unacked` hash. A worker SIGKILLed between the two (the reply in flight, or parsed but not yet
recorded) takes the message with it: it is in no list and in no hash, and nothing ever restores it.
Under load that window is open a good part of the time (a worker issues a fetch per job), so a
kill in the middle of a thousand jobs loses one often enough to see.

Here a fetch is one Lua script that pops the first non-empty list, in the same order `BRPOP`
would, and writes the unacked entry (the very record kombu's `restore_by_tag` and
`restore_visible` read) before it returns. Either the message is still in its list or it is in
`unacked`; there is no third place. It also saves the second round trip.

Scripts cannot block, so an idle consumer waits on a *doorbell*: every publish through this
transport also pushes a token onto `<prefix>bell:<queue>`, and a consumer whose fetch came back
empty `BRPOP`s the bells of its queues (with the transport's usual one-second timeout) and then
fetches again. A token only wakes a consumer; losing one costs nothing. A fetch that finds all of
its lists empty deletes their bells, so stale tokens do not pile up. Messages that reach a list
without ringing (kombu's own restores, a publisher on stock kombu) are found within the
one-second wait. Everything else (acks, restores, the unacked layout, fanout) is stock kombu.
"""

from __future__ import annotations

from time import time
from typing import Any

import kombu.transport
from kombu.transport import TRANSPORT_ALIASES, virtual
from kombu.transport import redis as kredis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

from app.celery.broker import BELL_CAP, bell_key, ring_bell

# KEYS: the queue lists in fetch order, then the unacked hash, its index, then the bells.
# ARGV: now, number of queue lists.
FETCH = """
local n = tonumber(ARGV[2])
for i = 1, n do
  local raw = redis.call('RPOP', KEYS[i])
  if raw then
    local props = cjson.decode(raw)['properties']
    local tag = props['delivery_tag']
    local info = props['delivery_info']
    redis.call('ZADD', KEYS[n + 2], ARGV[1], tag)
    redis.call('HSET', KEYS[n + 1], tag,
      '[' .. raw .. ',' .. cjson.encode(info['exchange']) .. ',' .. cjson.encode(info['routing_key']) .. ']')
    return {KEYS[i], raw}
  end
end
for i = n + 3, #KEYS do
  redis.call('DEL', KEYS[i])
end
return false
"""


# Set on a message the fetch script already recorded in `unacked`; read (and dropped) by the QoS,
# whichever channel ends up appending it. Top-level in the envelope, so Celery never sees it.
FETCHED_MARK = "_vigil_unacked_written"


class QoS(kredis.QoS):
    def append(self, message: Any, delivery_tag: str) -> None:
        if message._raw.pop(FETCHED_MARK, False):
            # The fetch script already wrote the unacked entry: only the local bookkeeping is left.
            virtual.QoS.append(self, message, delivery_tag)
        else:
            super().append(message, delivery_tag)


class Channel(kredis.Channel):
    QoS = QoS

    _waiting_on_bell = False

    def _brpop_start(self, timeout: float | None = None) -> None:
        if self.global_keyprefix:  # keys would need prefixing inside the script: stock path
            return super()._brpop_start(timeout)
        if timeout is None:
            timeout = self.brpop_timeout
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        if self._waiting_on_bell:
            command = ["BRPOP", *[bell_key(q) for q in queues], timeout or 0]
        else:
            lists = [self._q_for_pri(queue, pri) for pri in self.priority_steps for queue in queues]
            command = [
                "EVAL",
                FETCH,
                len(lists) + 2 + len(queues),
                *lists,
                self.unacked_key,
                self.unacked_index_key,
                *[bell_key(q) for q in queues],
                time(),
                len(lists),
            ]
        self._in_poll = self.client.connection
        self._brpop_sent_at = kredis.monotonic()
        self.client.connection.send_command(*command)

    def _brpop_read(self, **options: Any) -> bool:
        if self.global_keyprefix:
            return super()._brpop_read(**options)
        waited = self._waiting_on_bell
        try:
            try:
                reply = self.client.parse_response(self.client.connection, "BRPOP" if waited else "EVAL", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if waited:
                # A bell rang or the wait timed out: either way, fetch next.
                self._waiting_on_bell = False
                raise kredis.Empty()
            if not reply:
                self._waiting_on_bell = True
                raise kredis.Empty()
            dest, item = reply
            dest = bytes_to_str(dest).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            message = loads(bytes_to_str(item))
            message[FETCHED_MARK] = True
            self.connection._deliver(message, dest)
            return True
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        batch = kwargs.get("_publish_batch")
        if batch is not None:
            super()._put(queue, message, **kwargs)
            batch.add("lpush", bell_key(queue), 1)
            batch.add("ltrim", bell_key(queue), 0, BELL_CAP - 1)
            return
        # Stock `_put` plus the doorbell, in the one round trip stock kombu spends on the LPUSH.
        pri = self._get_message_priority(message, reverse=False)
        with self.conn_or_acquire() as client, client.pipeline(transaction=False) as pipe:
            pipe.lpush(self._q_for_pri(queue, pri), dumps(message))
            if self._expires and queue in self._expires:
                for step in self.priority_steps:
                    pipe.pexpire(self._q_for_pri(queue, step), self._expires[queue])
            ring_bell(pipe, queue)
            pipe.execute()


class Transport(kredis.Transport):
    Channel = Channel


def install() -> None:
    """Make `redis://` (and `rediss://`) URLs resolve to this transport in this process.

    An alias rather than Celery's `broker_transport` setting, because that setting also becomes
    the scheme of `Connection.as_uri()`, which Flower parses to find the broker's queue lengths.
    """
    for scheme in ("redis", "rediss"):
        TRANSPORT_ALIASES[scheme] = "app.celery.transport:Transport"
        kombu.transport._transport_cache.pop(scheme, None)  # resolved before install: forget it
