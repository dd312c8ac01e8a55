"""Checkpoints published on ``casebridge.ledger-checkpoints.v1`` (key: the log's origin).

Outside parties (witnesses, auditors) keep copies: once a checkpoint is in
someone else's hands, no later rewrite of the journal can match it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from casebridge_shared.classification import PUBLIC
from casebridge_shared.events import LEDGER_CHECKPOINTS_TOPIC, EventPayload


class CheckpointIssued(EventPayload):
    event_type = "casebridge.ledger.checkpoint-issued.v1"
    topic = LEDGER_CHECKPOINTS_TOPIC
    summary = "The journal signed a checkpoint: its size and root hash, as a C2SP signed note."

    origin: Annotated[str, PUBLIC]
    tree_size: Annotated[int, PUBLIC]
    root_hash: Annotated[str, PUBLIC]  # base64, as in the note
    note: Annotated[
        str, PUBLIC
    ]  # the C2SP tlog-checkpoint signed note, verifiable with GET /ledger/public-key
    issued_at: Annotated[datetime, PUBLIC]
