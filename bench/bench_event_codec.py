"""Decoding and encoding one CloudEvent: pydantic's JSON parser and serializer against json + validate.

What a consumer does per record (``EventConsumer._decode`` and the payload
model) and a unit of work per event it emits (``CloudEvent.to_bytes``), timed
with ``timeit`` on the order-placed event ``bench_order_to_case.py`` writes.
Baseline, in the same run: the way both were done until 2026-11-27
(``json.loads`` then ``model_validate``; ``json.dumps`` of ``model_dump``).

    .venv/bin/python bench/bench_event_codec.py
"""

from __future__ import annotations

import json
import sys
import timeit

import _common as c
from bench_order_to_case import order_event

from casebridge_shared.events import CloudEvent


def per_call_us(fn: object, number: int) -> float:
    runs = timeit.repeat(fn, number=number, repeat=5)  # type: ignore[arg-type]
    return min(runs) / number * 1e6


def main() -> int:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--number", type=int, default=20_000)
    args = p.parse_args()
    from case_handling.intake.events import PAYLOAD_MODELS

    print(c.machine())
    c.report_background_load()
    raw = order_event(1)
    event = CloudEvent.model_validate_json(raw)
    payload_model = PAYLOAD_MODELS[event.type]
    n = args.number
    decode_before = per_call_us(lambda: CloudEvent.model_validate(json.loads(raw)), n)
    decode_now = per_call_us(lambda: CloudEvent.model_validate_json(raw), n)
    payload = per_call_us(lambda: payload_model.model_validate(event.data), n)
    encode_before = per_call_us(
        lambda: json.dumps(event.model_dump(mode="json", exclude_none=True), separators=(",", ":")).encode(),
        n,
    )
    encode_now = per_call_us(lambda: event.to_bytes(), n)
    print(f"order-placed event, {len(raw)} bytes; best of 5 x {n:,} calls, microseconds per call:")
    print(f"  decode: json.loads + model_validate {decode_before:.1f}, model_validate_json {decode_now:.1f}")
    print(f"  its payload (OrderState.model_validate): {payload:.1f}")
    print(f"  encode: json.dumps(model_dump) {encode_before:.1f}, model_dump_json {encode_now:.1f}")
    print(
        f"\nsummary: decode before / now = {decode_before / decode_now:.1f}, "
        f"encode before / now = {encode_before / encode_now:.1f}; "
        f"decode + payload now = {decode_now + payload:.1f} us per event"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
