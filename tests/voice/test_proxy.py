from voice.proxy import MarkerFilter


def test_end_call_marker_is_removed_even_when_split() -> None:
    marker = MarkerFilter()
    pieces = ["Talk ", "soon, bye! [END", "_CA", "LL]"]
    spoken = "".join(marker.feed(p) for p in pieces) + marker.flush()
    assert spoken == "Talk soon, bye! " and marker.seen
    plain = MarkerFilter()
    assert "".join(plain.feed(p) for p in ["a [", "b] c"]) + plain.flush() == "a [b] c" and not plain.seen
