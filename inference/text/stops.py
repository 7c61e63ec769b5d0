"""Stop strings matched across token boundaries, never emitted."""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    """Filters one completion's text stream against its stop strings.

    Text arrives in arbitrary pieces (one per detokenized step). Any suffix that could still
    grow into a stop string is held back; once a stop string appears, the text before it is
    released and nothing after it ever is.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        if any(not stop for stop in stops):
            raise ValueError("stop strings must not be empty")
        self._stops = tuple(dict.fromkeys(stops))  # deduplicated, order kept
        self._longest = max((len(stop) for stop in self._stops), default=0)
        self._held = ""
        self.matched: str | None = None  # the stop string that ended the text, if any

    @property
    def stopped(self) -> bool:
        return self.matched is not None

    def push(self, text: str) -> tuple[str, bool]:
        """Add text; return (text safe to emit now, whether a stop string was reached)."""
        if self.matched is not None:
            return "", True
        if not self._stops:
            return text, False
        buffer = self._held + text
        found = self._earliest_stop(buffer)
        if found is not None:
            position, self.matched = found
            self._held = ""
            return buffer[:position], True
        keep = self._partial_suffix_length(buffer)
        self._held = buffer[len(buffer) - keep :]
        return buffer[: len(buffer) - keep], False

    def flush(self) -> str:
        """Release held-back text when the completion ends for another reason."""
        held, self._held = self._held, ""
        return "" if self.matched is not None else held

    def _earliest_stop(self, buffer: str) -> tuple[int, str] | None:
        best: tuple[int, str] | None = None
        for stop in self._stops:
            position = buffer.find(stop)
            if position >= 0 and (best is None or position < best[0]):
                best = (position, stop)
        return best

    def _partial_suffix_length(self, buffer: str) -> int:
        """Length of the longest suffix of `buffer` that is a proper prefix of a stop."""
        for length in range(min(len(buffer), self._longest - 1), 0, -1):
            suffix = buffer[-length:]
            if any(stop.startswith(suffix) for stop in self._stops):
                return length
        return 0
