"""What mobile clients check for around push, with a real client library: slixmpp's own
plugins for carbons (XEP-0280), client state (XEP-0352), blocking (XEP-0191), PEP (XEP-0163,
with its automatic Entity Capabilities, XEP-0115), vCard (XEP-0054), version (XEP-0092) and
disco (XEP-0030), against a running herald on 127.0.0.1:PORT serving `localhost` with accounts
alice, bob and carol (password `pw`) and those modules on.

Prints one line per check and exits 1 if any fails. Usage: slixmpp_essentials.py PORT
"""

import asyncio
import logging
import ssl
import sys
import time
from datetime import datetime, timezone

import slixmpp
from slixmpp.xmlstream import ET

logging.basicConfig(level=logging.CRITICAL)

DEVICES = "urn:xmpp:omemo:2:devices"


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid):
        super().__init__(jid, "pw")
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        for plugin in [
            "xep_0030", "xep_0004", "xep_0060", "xep_0115", "xep_0163", "xep_0280",
            "xep_0352", "xep_0191", "xep_0054", "xep_0092", "xep_0313", "xep_0359",
        ]:
            self.register_plugin(plugin)
        self.messages = []
        self.carbons = []
        self.presences = []
        self.events = []
        self.ready = asyncio.Event()
        self.add_event_handler("session_start", self.start)
        self.add_event_handler("message", lambda m: self.messages.append(m))
        self.add_event_handler("carbon_received", lambda m: self.carbons.append(("received", m)))
        self.add_event_handler("carbon_sent", lambda m: self.carbons.append(("sent", m)))
        for show in ("available", "away", "chat", "dnd", "xa"):
            self.add_event_handler(f"presence_{show}", lambda p: self.presences.append(p))
        self.add_event_handler("pubsub_publish", lambda m: self.events.append(m))

    async def start(self, _):
        self.send_presence()
        await self.get_roster()
        self.ready.set()

    def bodies(self, kind="chat"):
        return [str(m["body"]) for m in self.messages if m["type"] == kind]


async def session(port, jid, interest=None):
    client = Client(jid)
    client.connect(host="127.0.0.1", port=port)
    await asyncio.wait_for(client.ready.wait(), 20)
    if interest:
        # Once bound: slixmpp computes the caps of a JID it knows (added before the
        # session, its hash covers the interest alone while its disco answer has every
        # feature, a mismatch herald rightly refuses).
        client.plugin["xep_0163"].add_interest(interest)
        await asyncio.sleep(0.5)
        client.send_presence()
    return client


async def until(condition, seconds):
    deadline = time.time() + seconds
    while not condition() and time.time() < deadline:
        await asyncio.sleep(0.1)
    return condition()


def devices(device_id):
    element = ET.Element("{urn:xmpp:omemo:2}devices")
    ET.SubElement(element, "{urn:xmpp:omemo:2}device", {"id": device_id})
    return element


def open_options(client):
    form = client.plugin["xep_0004"].make_form(ftype="submit")
    form.add_field(var="FORM_TYPE", ftype="hidden",
                   value="http://jabber.org/protocol/pubsub#publish-options")
    form.add_field(var="pubsub#access_model", value="open")
    return form


async def main(port):
    failures = 0

    def check(ok, line):
        nonlocal failures
        print(("ok   " if ok else "FAIL ") + line)
        failures += 0 if ok else 1

    # What this script sends (the server may have archived earlier scripts' messages).
    began = datetime.now(timezone.utc)
    await asyncio.sleep(0.01)

    # Carbons.
    phone = await session(port, "alice@localhost/phone")
    laptop = await session(port, "alice@localhost/laptop")
    bob = await session(port, "bob@localhost/desk", interest=DEVICES)
    await phone.plugin["xep_0280"].enable()
    await laptop.plugin["xep_0280"].enable()
    bob.send_message(mto="alice@localhost/phone", mbody="to the phone", mtype="chat")
    phone.send_message(mto="bob@localhost", mbody="from the phone", mtype="chat")
    await until(lambda: len(laptop.carbons) >= 2, 10)
    seen = sorted((kind, str(m["carbon_" + kind]["body"])) for kind, m in laptop.carbons)
    check(seen == [("received", "to the phone"), ("sent", "from the phone")],
          f"carbons: the laptop got copies of both directions: {seen}")

    # Subscriptions both ways (slixmpp approves and subscribes back by itself).
    bob.send_presence_subscription(pto="alice@localhost")
    await until(lambda: bob.client_roster["alice@localhost"]["subscription"] == "both", 10)
    check(bob.client_roster["alice@localhost"]["subscription"] == "both",
          f"roster: bob and alice subscribed both ways "
          f"({bob.client_roster['alice@localhost']['subscription']})")
    await asyncio.sleep(1)

    # Client state: presence waits while inactive; a chat message brings it.
    laptop.disconnect()
    phone.plugin["xep_0352"].send_inactive()
    await asyncio.sleep(0.5)
    before = len(phone.presences)
    bob.send_presence(pshow="away")
    await asyncio.sleep(1)
    held = len(phone.presences) == before
    bob.send_message(mto="alice@localhost", mbody="wake up", mtype="chat")
    await until(lambda: "wake up" in phone.bodies(), 10)
    await asyncio.sleep(0.3)
    check(held and len(phone.presences) > before and "wake up" in phone.bodies(),
          f"csi: presence held while inactive ({held}), delivered with the chat message")
    phone.plugin["xep_0352"].send_active()

    # PEP: an open device list, fetched by a stranger; bob (caps with +notify) notified.
    carol = await session(port, "carol@localhost/desk")
    await phone.plugin["xep_0060"].publish(
        None, DEVICES, id="current", payload=devices("42"), options=open_options(phone))
    got = await until(lambda: any(m["pubsub_event"]["items"]["node"] == DEVICES
                                  for m in bob.events), 10)
    check(got, "pep: the subscribed contact whose caps ask for the node was notified")
    items = await carol.plugin["xep_0060"].get_items("alice@localhost", DEVICES)
    found = [item["id"] for item in items["pubsub"]["items"]]
    check(found == ["current"], f"pep: a stranger fetched the open device list: {found}")

    # Blocking: carol is blocked; her message bounces and nothing reaches alice.
    await phone.plugin["xep_0191"].block(["carol@localhost"])
    blocked = await phone.plugin["xep_0191"].get_blocked_jids()
    carol.send_message(mto="alice@localhost", mbody="blocked?", mtype="chat")
    bounced = await until(lambda: carol.bodies("error") or any(
        m["type"] == "error" for m in carol.messages), 10)
    await asyncio.sleep(0.5)
    check([str(j) for j in blocked] == ["carol@localhost"] and bounced
          and "blocked?" not in phone.bodies(),
          f"blocking: list {[str(j) for j in blocked]}, carol's message bounced and not delivered")

    # vCard and version.
    vcard = phone.plugin["xep_0054"].make_vcard()
    vcard["FN"] = "Alice A."
    await phone.plugin["xep_0054"].publish_vcard(vcard)
    fetched = await bob.plugin["xep_0054"].get_vcard("alice@localhost")
    check(fetched["vcard_temp"]["FN"] == "Alice A.", "vcard: set by alice, read by bob")
    version = await bob.plugin["xep_0092"].get_version("localhost")
    check(version["software_version"]["name"] == "herald",
          f"version: {version['software_version']['name']} {version['software_version']['version']}")

    # The archive: bob's chat messages to alice so far, paged 2 at a time by slixmpp's
    # iterator (RSM after), each with the stanza-id alice's copy carried.
    got = [m for m in phone.messages if m["type"] == "chat" and str(m["from"].bare) == "bob@localhost"]
    delivered = [m["stanza_id"]["id"] for m in got]
    archived = []
    async for result in phone.plugin["xep_0313"].iterate(
            with_jid=slixmpp.JID("bob@localhost"), start=began, rsm={"max": 2}):
        archived.append(result["mam_result"]["id"])
    # Alice's archive also has the one she sent bob ("from the phone").
    check([a for a in archived if a in delivered] == delivered and len(delivered) == 2
          and len(archived) == 3,
          f"mam: {len(archived)} archived messages with bob, paged 2 at a time, with the "
          f"stanza-ids they were delivered with ({archived} vs {delivered})")

    # Disco as Conversations' compliance tester checks it.
    server = await bob.plugin["xep_0030"].get_info("localhost")
    features = server["disco_info"]["features"]
    wanted = ["urn:xmpp:carbons:2", "urn:xmpp:blocking"]
    check(all(f in features for f in wanted), f"disco: the server has {wanted}")
    account = await phone.plugin["xep_0030"].get_info("alice@localhost")
    identities = [(c, t) for c, t, _, _ in account["disco_info"]["identities"]]
    features = account["disco_info"]["features"]
    wanted = ["urn:xmpp:push:0", "http://jabber.org/protocol/pubsub#publish-options",
              "urn:xmpp:mam:2"]
    check(("pubsub", "pep") in identities and all(f in features for f in wanted),
          f"disco: the account has pubsub/pep and {wanted}")
    check("csi" in str(phone.features) or phone.plugin["xep_0352"].enabled,
          "csi: offered as a stream feature")

    for client in (phone, bob, carol):
        client.disconnect()
    await asyncio.sleep(0.5)
    return failures


if __name__ == "__main__":
    sys.exit(1 if asyncio.run(main(int(sys.argv[1]))) else 0)
