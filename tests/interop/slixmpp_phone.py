"""The sleeping phone, with a real client library: slixmpp with XEP-0198 logs in the way
Conversations and Monal do (FIELD-NOTES defect 1).

Against a running herald on 127.0.0.1:PORT serving `localhost` with accounts alice and bob
(password `pw`), offline storage at its default limit of 100 and stream management:

1. bob sends 150 chat messages to alice while she is offline (50 are refused);
2. alice logs in with stream management and receives the 100 stored messages in order, and
   stays connected; twice in a row;
3. bob sends a live burst of 500 messages to alice's stream-management session: all arrive in
   order, no stream error, nothing bounced.

Prints one line per check and exits 1 if any fails. Usage: slixmpp_phone.py PORT
"""

import asyncio
import logging
import ssl
import sys
import time

import slixmpp

logging.basicConfig(level=logging.CRITICAL)


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, stream_management):
        super().__init__(jid, "pw")
        # herald's generated certificate is self-signed.
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.register_plugin("xep_0030")
        if stream_management:
            self.register_plugin("xep_0198")
        self.got = []
        self.errors = []
        self.ended = False
        self.ready = asyncio.Event()
        self.add_event_handler("session_start", self.start)
        self.add_event_handler(
            "message", lambda m: self.got.append((m["type"], str(m["body"])))
        )
        self.add_event_handler("stream_error", lambda e: self.errors.append(str(e)))
        self.add_event_handler("disconnected", lambda _: setattr(self, "ended", True))

    async def start(self, _):
        self.send_presence()
        self.ready.set()

    def chats(self):
        return [body for kind, body in self.got if kind == "chat"]

    def bounces(self):
        return [body for kind, body in self.got if kind == "error"]


async def session(port, jid, stream_management=True):
    client = Client(jid, stream_management)
    client.connect(host="127.0.0.1", port=port)
    await asyncio.wait_for(client.ready.wait(), 20)
    return client


async def until(condition, seconds):
    deadline = time.time() + seconds
    while not condition() and time.time() < deadline:
        await asyncio.sleep(0.2)


async def main(port):
    failures = 0

    def check(ok, line):
        nonlocal failures
        print(("ok   " if ok else "FAIL ") + line)
        failures += 0 if ok else 1

    for round_ in range(2):
        bob = await session(port, "bob@localhost", stream_management=False)
        for n in range(150):
            bob.send_message(mto="alice@localhost", mbody=f"r{round_}-{n}", mtype="chat")
        await until(lambda: len(bob.bounces()) >= 50, 20)
        bob.disconnect()
        await asyncio.sleep(0.5)
        alice = await session(port, "alice@localhost")
        await until(lambda: len(alice.chats()) >= 100, 30)
        await asyncio.sleep(2)
        expected = [f"r{round_}-{n}" for n in range(100)]
        check(
            alice.chats() == expected and not alice.errors and not alice.ended,
            f"login {round_ + 1}: {len(alice.chats())} of 100 stored messages in order, "
            f"stream errors {alice.errors}, disconnected {alice.ended} "
            f"({len(bob.bounces())} of 150 refused past the limit)",
        )
        alice.disconnect()
        await asyncio.sleep(0.5)

    alice = await session(port, "alice@localhost")
    bob = await session(port, "bob@localhost")
    for n in range(500):
        bob.send_message(mto="alice@localhost", mbody=f"live-{n}", mtype="chat")
    await until(lambda: len(alice.chats()) >= 500, 60)
    check(
        alice.chats() == [f"live-{n}" for n in range(500)]
        and not alice.errors
        and not alice.ended
        and not bob.bounces(),
        f"live burst: {len(alice.chats())} of 500 in order, stream errors {alice.errors}, "
        f"disconnected {alice.ended}, bounced {len(bob.bounces())}",
    )
    alice.disconnect()
    bob.disconnect()
    await asyncio.sleep(0.5)
    return failures


if __name__ == "__main__":
    sys.exit(1 if asyncio.run(main(int(sys.argv[1]))) else 0)
