"""Federation with real servers: herald (herald.test, 127.0.0.2) against Prosody
(prosody.test, 127.0.0.3) and ejabberd (ejabberd.test, 127.0.0.4), set up by
scripts/interop-federation.

For each peer, with slixmpp clients:
1. a herald user and the peer's user exchange chat messages both ways;
2. a presence subscription from the herald user is approved by the peer's user (and the
   other way round): each then sees the other's available presence;
3. push to an app server that is a component on the peer: a message to an offline herald
   user gives exactly one publish there, from herald.test; a cancel error from that app
   server disables the registration (the next message gives none).

Prints one line per check and exits 1 if any fails.
"""

import asyncio
import logging
import ssl
import sys
import time
import xml.etree.ElementTree as ET

import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

logging.basicConfig(level=logging.CRITICAL)

HERALD = ("herald.test", "127.0.0.2")
PEERS = [
    ("Prosody", "prosody.test", "127.0.0.3", "carol@prosody.test"),
    ("ejabberd", "ejabberd.test", "127.0.0.4", "erin@ejabberd.test"),
]
WAIT = 30


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid):
        super().__init__(jid, "pw")
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.register_plugin("xep_0030")
        self.auto_authorize = True
        self.auto_subscribe = True
        self.got = []
        self.presences = []
        self.ready = asyncio.Event()
        self.add_event_handler("session_start", self.start)
        self.add_event_handler(
            "message", lambda m: self.got.append((str(m["from"]), m["type"], str(m["body"])))
        )
        self.add_event_handler(
            "presence_available", lambda p: self.presences.append(str(p["from"]))
        )

    async def start(self, _):
        self.send_presence()
        await self.get_roster()
        self.ready.set()


class AppServer(slixmpp.ComponentXMPP):
    """A push app server (XEP-0357 section 5), answering each publish as told."""

    def __init__(self, jid, host):
        super().__init__(jid, "secret", host, 5347)
        self.publishes = []
        self.answer = "result"
        self.register_handler(
            Callback(
                "publish",
                MatchXPath(
                    "{jabber:component:accept}iq/{http://jabber.org/protocol/pubsub}pubsub"
                ),
                self.on_publish,
            )
        )

    def on_publish(self, iq):
        self.publishes.append(iq)
        if self.answer == "result":
            iq.reply().send()
        else:
            reply = iq.reply(clear=True)
            reply["error"]["type"] = "cancel"
            reply["error"]["condition"] = "item-not-found"
            reply.send()


async def login(jid, host):
    client = Client(jid)
    client.connect(host=host, port=5222)
    await asyncio.wait_for(client.ready.wait(), WAIT)
    return client


async def until(condition, seconds=WAIT):
    deadline = time.time() + seconds
    while not condition() and time.time() < deadline:
        await asyncio.sleep(0.2)
    return condition()


async def enable_push(jid, app, node):
    client = await login(jid, HERALD[1])
    iq = client.make_iq_set()
    iq.append(ET.fromstring(f"<enable xmlns='urn:xmpp:push:0' jid='{app}' node='{node}'/>"))
    reply = await iq.send(timeout=WAIT)
    client.disconnect()
    await asyncio.sleep(0.5)
    return reply["type"]


async def main():
    failures = 0

    def check(ok, line):
        nonlocal failures
        print(("ok   " if ok else "FAIL ") + line)
        failures += 0 if ok else 1

    for name, domain, host, user in PEERS:
        alice = await login("alice@herald.test", HERALD[1])
        remote = await login(user, host)
        alice.send_message(mto=user, mbody=f"hello {name}", mtype="chat")
        ok = await until(lambda: any(b == f"hello {name}" for _, _, b in remote.got))
        check(ok, f"{name}: a herald user's message reaches {user}")
        remote.send_message(mto="alice@herald.test", mbody="hello herald", mtype="chat")
        ok = await until(
            lambda: any(f.startswith(user) and b == "hello herald" for f, _, b in alice.got)
        )
        check(ok, f"{name}: {user}'s message reaches the herald user")

        alice.send_presence_subscription(pto=user)
        ok = await until(lambda: any(p.startswith(user) for p in alice.presences))
        check(ok, f"{name}: subscription approved across; the herald user sees {user} online")
        ok = await until(lambda: any(p.startswith("alice@herald.test") for p in remote.presences))
        check(ok, f"{name}: {user} sees the herald user online (mutual subscription)")

        app_jid = f"push.{domain}"
        app = AppServer(app_jid, host)
        app.connect()
        await until(lambda: app.is_connected(), 10)
        node = f"node-{name}"
        check(await enable_push("dave@herald.test", app_jid, node) == "result",
              f"{name}: dave@herald.test enables push at {app_jid}")
        alice.send_message(mto="dave@herald.test", mbody="wake up", mtype="chat")
        ok = await until(lambda: len(app.publishes) >= 1)
        await asyncio.sleep(1.5)
        first = app.publishes[0] if app.publishes else None
        check(ok and len(app.publishes) == 1 and str(first["from"]) == "herald.test"
              and node in str(first) and "wake up" in str(first),
              f"{name}: a message to the offline herald user gives exactly one publish at {app_jid}")
        app.answer = "cancel"
        alice.send_message(mto="dave@herald.test", mbody="second", mtype="chat")
        await until(lambda: len(app.publishes) >= 2)
        await asyncio.sleep(1.0)
        alice.send_message(mto="dave@herald.test", mbody="third", mtype="chat")
        await asyncio.sleep(3.0)
        check(len(app.publishes) == 2,
              f"{name}: a cancel error from {app_jid} disables the registration "
              f"({len(app.publishes)} publishes)")
        app.disconnect()
        alice.disconnect()
        remote.disconnect()
        await asyncio.sleep(0.5)

    sys.exit(1 if failures else 0)


asyncio.run(main())
