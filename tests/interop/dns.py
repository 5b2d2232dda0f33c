"""A tiny DNS server for the federation interop (RFC 1035, UDP only): answers A queries for
the names of a hosts file that end in `.test`, and every other query for `.test` with an
empty NOERROR answer, so that servers looking up SRV records for the test domains fall back
to A records at once (this machine's network reaches no real DNS server).

Usage: dns.py ADDRESS HOSTS_FILE
"""

import socket
import struct
import sys


def load(path):
    names = {}
    with open(path) as hosts:
        for line in hosts:
            fields = line.split("#")[0].split()
            for name in fields[1:]:
                if name.endswith(".test") and "." in fields[0]:
                    names.setdefault(name.lower(), fields[0])
    return names


def question(packet):
    labels, i = [], 12
    while packet[i]:
        length = packet[i]
        labels.append(packet[i + 1 : i + 1 + length].decode("ascii", "replace"))
        i += 1 + length
    qtype, _ = struct.unpack("!HH", packet[i + 1 : i + 5])
    return ".".join(labels).lower(), qtype, packet[12 : i + 5]


def answer(packet, names):
    ident, _flags, qdcount = struct.unpack("!HHH", packet[:6])
    if qdcount != 1:
        return None
    name, qtype, raw_question = question(packet)
    records = b""
    count = 0
    if qtype == 1 and name in names:
        address = socket.inet_aton(names[name])
        records = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + address
        count = 1
    # Response, authoritative, recursion available; NXDOMAIN for unknown names.
    rcode = 0 if name in names or count else 3
    flags = 0x8400 | 0x0080 | rcode
    header = struct.pack("!HHHHHH", ident, flags, 1, count, 0, 0)
    return header + raw_question + records


def main(address, hosts_file):
    names = load(hosts_file)
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind((address, 53))
    while True:
        packet, peer = server.recvfrom(4096)
        try:
            reply = answer(packet, names)
        except (IndexError, struct.error):
            reply = None
        if reply:
            server.sendto(reply, peer)


main(sys.argv[1], sys.argv[2])
