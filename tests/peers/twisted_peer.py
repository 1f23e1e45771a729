"""A Twisted peer on Int32StringReceiver, run in its own process by
tests/peers/test_twisted.py (each test gets a fresh reactor).

    python twisted_peer.py server             # echo; prints its port
    python twisted_peer.py client PORT SEED COUNT CAPTURE
        # sends COUNT random strings (0 to 256 KiB), checks the echoes,
        # writes every byte it received to CAPTURE, prints a JSON summary
"""

import json
import random
import sys

from twisted.internet import protocol, reactor
from twisted.protocols.basic import Int32StringReceiver

LARGEST = 256 * 1024


def payloads(seed, count):
    rng = random.Random(seed)
    sizes = [0, 1, LARGEST] + [rng.randint(0, LARGEST) for _ in range(count - 3)]
    return [rng.randbytes(n) for n in sizes[:count]]


class Echo(Int32StringReceiver):
    MAX_LENGTH = LARGEST  # Twisted's default is 99,999 bytes

    def stringReceived(self, string):
        self.sendString(string)


class Sender(Int32StringReceiver):
    MAX_LENGTH = LARGEST

    def __init__(self, expected, capture):
        self.expected = expected
        self.received = []
        self.capture = capture
        self.result = None

    def connectionMade(self):
        for payload in self.expected:
            self.sendString(payload)

    def dataReceived(self, data):
        self.capture.write(data)
        super().dataReceived(data)

    def stringReceived(self, string):
        self.received.append(string)
        if len(self.received) == len(self.expected):
            self.result = self.received == self.expected
            self.transport.loseConnection()

    def lengthLimitExceeded(self, length):
        self.result = f"length limit exceeded: {length}"
        self.transport.loseConnection()

    def connectionLost(self, reason):
        summary = {
            "ok": self.result is True,
            "error": None if self.result is True else str(self.result),
            "frames": len(self.received),
            "bytes": sum(len(s) for s in self.received),
        }
        print(json.dumps(summary), flush=True)
        reactor.stop()


def main(argv):
    if argv[0] == "server":
        factory = protocol.Factory.forProtocol(Echo)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        print(port.getHost().port, flush=True)
        reactor.run()
    else:
        port, seed, count, capture_path = int(argv[1]), int(argv[2]), int(argv[3]), argv[4]
        with open(capture_path, "wb") as capture:
            sender = Sender(payloads(seed, count), capture)
            factory = protocol.ClientFactory.forProtocol(lambda: sender)
            factory.clientConnectionFailed = lambda connector, reason: (
                print(json.dumps({"ok": False, "error": str(reason)}), flush=True),
                reactor.stop(),
            )
            reactor.connectTCP("127.0.0.1", port, factory, timeout=30)
            reactor.callLater(120, reactor.stop)  # bounded, whatever happens
            reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
