"""What a run prints for people: one flushed line at a time (a long fit shows progress live)."""


def say(message: str) -> None:
    print(message, flush=True)
