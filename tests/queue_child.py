"""A child process for the embedded queue's crash tests (run by tests/test_broker_embedded.py).

    queue_child.py publish URL QUEUE COUNT   publish 0..COUNT-1, print each number once durable
    queue_child.py take URL QUEUE COUNT      take COUNT messages without acking, print each

Then it sleeps until killed: the parent sends SIGKILL at a moment of its choosing.
"""

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402
import time  # noqa: E402

import gevent.pool  # noqa: E402

from mailerq_gevent.broker import Broker  # noqa: E402


def publish(broker, queue, count):
    def one(number):
        broker.publish(queue, {"n": number})
        print(number, flush=True)
    # several greenlets at once, so commits are grouped while we are killed
    pool = gevent.pool.Pool(20)
    for number in range(count):
        pool.spawn(one, number)
    pool.join()


def take(broker, queue, count):
    taken = []

    def handler(delivery):
        taken.append(delivery)          # never settled: the process dies first
        print(delivery.json()["n"], flush=True)
    broker.consume(queue, handler, prefetch=count)


def main(action, url, queue, count):
    broker = Broker(url)
    broker.start([queue])
    {"publish": publish, "take": take}[action](broker, queue, int(count))
    print("idle", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main(*sys.argv[1:])
