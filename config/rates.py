"""Request budgets written as "<count>/<period>" ("1200/min"): checked by the settings when they load, so that
one the limiter cannot count stops the process at start-up instead of answering every request it covers with
a 500, and read by config/ratelimit.py at each request (tests lower them per test). No Django here: the
settings import it."""

PERIODS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hour": 3600,
    "d": 86400,
    "day": 86400,
}


def parse_rate(rate: str) -> tuple[int, int]:
    """ "120/min" → (120, 60). ValueError or KeyError for what is not a count per one of PERIODS."""
    count, _, period = rate.partition("/")
    return int(count), PERIODS[period.strip().lower()]
