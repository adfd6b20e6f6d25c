"""A clock the test moves by hand (wall or monotonic: the code under test is
given it instead of ``time.time`` / ``time.monotonic``), so no test sleeps."""


class FakeClock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds
