"""Hostile input on the gateway's MLLP listener (issue 9, "Hostile input").

More than 1,000 generated messages over long-lived connections, some several to one write,
each followed by a known-good order that must get AA and be stored. The listener must answer
every readable message with a correct ACK, close on what is not MLLP, and keep serving.
"""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .hl7_cases import END, START, Hl7Case, Reply, hl7_cases
from .live import LiveGateway, read_ack
from .mllp_peer import PeerClosed, RawMllpPeer

pytestmark = [pytest.mark.reliability]

MIN_MESSAGES = 1_000


def _batches(cases: list[Hl7Case], pipelined: bool) -> list[list[Hl7Case]]:
    """One write per case, or (pipelined) consecutive ACK cases in one write, each batch
    ending at the first case after which the connection may be gone."""
    if not pipelined:
        return [[case] for case in cases]
    batches: list[list[Hl7Case]] = [[]]
    for case in cases:
        batches[-1].append(case)
        if case.reply is not Reply.ACK:
            batches.append([])
    return [batch for batch in batches if batch]


def _check_ack(live: LiveGateway, case: Hl7Case, payload: bytes) -> str:
    # The ACK names its character set (MSH-18) when the message did: read it as a peer would.
    message_code, ack = read_ack(payload)
    assert message_code == "ACK", f"{case!r}: reply is {message_code}, not an ACK"
    code = ack.code.value
    if case.reply is Reply.ACK:
        assert code in case.codes, f"{case!r}: MSA-1 {code} ({ack.text})"
        assert ack.acknowledged_control_id == case.control_id, (
            f"{case!r}: MSA-2 {ack.acknowledged_control_id[:80]!r} does not echo MSH-10"
        )
        if code == "AA" and case.accession:
            assert live.order_stored(case.accession), f"{case!r}: AA but the order is not stored"
    else:
        assert code in {"AA", "AE", "AR"}, f"{case!r}: MSA-1 {code}"
    return code


def _exchange(
    live: LiveGateway,
    peer: RawMllpPeer,
    batch: list[Hl7Case],
    pieces: list[int],
    seen: Counter[str],
) -> None:
    wire = b"".join(case.wire for case in batch)
    peer.send(wire, half_close=batch[-1].half_close, pieces=pieces)
    for case in batch:
        if case.reply is Reply.CLOSE:
            answered = peer.read_until_closed()
            assert answered == b"", f"{case!r}: answered {answered[:200]!r} instead of closing"
            seen["closed"] += 1
            continue
        try:
            payload = peer.read_frame()
        except PeerClosed as closed:
            assert case.reply is Reply.ACK_OR_CLOSE, f"{case!r}: closed instead of an ACK"
            assert closed.data == b"", f"{case!r}: sent {closed.data[:200]!r} then closed"
            seen["closed"] += 1
            continue
        seen[_check_ack(live, case, payload)] += 1


def test_mllp_listener_answers_every_hostile_message_correctly_and_keeps_serving(
    live_gateway: LiveGateway,
) -> None:
    peer = live_gateway.mllp_peer()
    seen: Counter[str] = Counter()

    @settings(
        max_examples=400,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        cases=st.lists(hl7_cases(), min_size=1, max_size=5),
        pipelined=st.booleans(),
        pieces=st.one_of(st.just([]), st.just([]), st.lists(st.integers(1, 40), max_size=4)),
    )
    def hostile_then_good(cases: list[Hl7Case], pipelined: bool, pieces: list[int]) -> None:
        try:
            for batch in _batches(cases, pipelined):
                _exchange(live_gateway, peer, batch, pieces, seen)
            seen["hostile"] += len(cases)
            live_gateway.send_good_hl7(peer)  # every few hostile messages, a good one
        except BaseException:
            peer.close()  # start the next example on a clean connection
            raise

    try:
        hostile_then_good()
    finally:
        peer.close()
    assert seen["hostile"] >= MIN_MESSAGES, seen
    # The generator reached every outcome, so the oracle was exercised on each.
    assert min(seen["AA"], seen["AE"], seen["AR"], seen["closed"]) > 0, seen
    live_gateway.assert_alive()


def test_oversize_message_gets_ar_and_the_connection_keeps_serving(
    live_gateway: LiveGateway,
) -> None:
    """Past the 1,000,000-byte limit: AR echoing MSH-10 when the MSH is readable, a close
    when there is no MSH; the listener serves the next message either way."""
    peer = live_gateway.mllp_peer()
    try:
        big = (
            "MSH|^~\\&|RIS|HOSP|PACSFLOW|RAD|20261128||ORM^O01|HUGE1|P|2.5.1\r"
            f"NTE|1||{'N' * 1_000_100}\r"
        )
        peer.send(START + big.encode() + END)
        message_code, ack = read_ack(peer.read_frame())
        assert (message_code, ack.code.value, ack.acknowledged_control_id) == ("ACK", "AR", "HUGE1")
        live_gateway.send_good_hl7(peer)  # same connection

        peer.send(START + b"Z" * 1_000_100 + END)
        assert peer.read_until_closed() == b""
        live_gateway.send_good_hl7(peer)  # a new connection
    finally:
        peer.close()
    live_gateway.assert_alive()
