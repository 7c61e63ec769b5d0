"""Stop strings: matched across pushes, held back while ambiguous, never emitted."""

from __future__ import annotations

import random

import pytest

from inference.text.stops import StopMatcher


def feed(matcher: StopMatcher, pieces: list[str]) -> tuple[str, bool]:
    out, stopped = [], False
    for piece in pieces:
        text, stopped = matcher.push(piece)
        out.append(text)
    if not stopped:
        out.append(matcher.flush())
    return "".join(out), stopped


def test_stop_split_over_two_pushes() -> None:
    matcher = StopMatcher(["\n\n"])
    assert matcher.push("Hello\n") == ("Hello", False)
    assert matcher.push("\nWorld") == ("", True)
    assert matcher.matched == "\n\n"
    assert matcher.push("more") == ("", True)
    assert matcher.flush() == ""


def test_stop_split_over_three_pushes() -> None:
    matcher = StopMatcher(["STOP"])
    assert matcher.push("abc S") == ("abc ", False)
    assert matcher.push("T") == ("", False)
    assert matcher.push("OP and after") == ("", True)


def test_false_start_is_released() -> None:
    matcher = StopMatcher(["STOP"])
    assert matcher.push("ST") == ("", False)
    assert matcher.push("ART") == ("START", False)
    assert matcher.flush() == ""


def test_held_text_flushed_when_generation_ends_otherwise() -> None:
    matcher = StopMatcher(["</answer>"])
    assert matcher.push("42 </ans") == ("42 ", False)
    assert matcher.flush() == "</ans"
    assert not matcher.stopped


def test_stop_at_start() -> None:
    matcher = StopMatcher(["User:"])
    assert matcher.push("User: hi") == ("", True)


def test_earliest_of_several_stops_wins() -> None:
    matcher = StopMatcher(["world", "lo w", "xyz"])
    assert matcher.push("hello world") == ("hel", True)
    assert matcher.matched == "lo w"


def test_overlapping_prefixes() -> None:
    # "aab" has prefixes "a", "aa"; after "aaa" only the last two can still start a match.
    matcher = StopMatcher(["aab", "ab!"])
    assert matcher.push("xaaa") == ("xa", False)
    assert matcher.push("b") == ("", True)
    assert matcher.matched == "aab"
    other = StopMatcher(["aab", "ab!"])
    assert other.push("xaaa") == ("xa", False)
    assert other.push("c") == ("aac", False)


def test_stop_inside_one_piece_with_text_after() -> None:
    assert feed(StopMatcher(["."]), ["Hi. There."]) == ("Hi", True)


def test_no_stops_passes_through() -> None:
    matcher = StopMatcher([])
    assert matcher.push("anything") == ("anything", False)
    assert matcher.flush() == ""


def test_multibyte_stop() -> None:
    assert feed(StopMatcher(["🌊"]), ["calm 🌊", " sea"]) == ("calm ", True)
    assert feed(StopMatcher(["水门"]), ["河", "水", "门开"]) == ("河", True)


def test_empty_stop_rejected() -> None:
    with pytest.raises(ValueError):
        StopMatcher(["ok", ""])


def test_random_splits_match_reference() -> None:
    rng = random.Random(1)
    for _ in range(500):
        text = "".join(rng.choice("ab\n ") for _ in range(rng.randint(0, 30)))
        stops = ["".join(rng.choice("ab\n") for _ in range(rng.randint(1, 4))) for _ in range(2)]
        cuts = sorted(rng.sample(range(len(text) + 1), k=min(len(text) + 1, 4)))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        hits = [text.find(stop) for stop in stops if stop in text]
        expected = (text[: min(hits)], True) if hits else (text, False)
        assert feed(StopMatcher(stops), pieces) == expected, (text, stops, pieces)
