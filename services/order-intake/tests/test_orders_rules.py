"""The order rules on their own, no database and no HTTP: when an order may be cancelled and by
whom (orders.service.check_cancellable), and which products can be ordered
(catalog.service.is_orderable).

The HTTP stories in test_orders_api.py and test_catalog_api.py show the same rules through the
API; these tables name every status so a changed rule shows here as the row it changes.
"""

from __future__ import annotations

import pytest

from casebridge_shared.problems import Conflict
from order_intake.catalog.service import is_orderable
from order_intake.orders.models import OrderStatus
from order_intake.orders.service import check_cancellable

SUBMITTED, ACCEPTED, IN_PROGRESS, PROPOSED, COMPLETED, CANCELLED = (
    OrderStatus.SUBMITTED,
    OrderStatus.ACCEPTED,
    OrderStatus.IN_PROGRESS,
    OrderStatus.SOLUTION_PROPOSED,
    OrderStatus.COMPLETED,
    OrderStatus.CANCELLED,
)


def test_the_table_below_names_every_status() -> None:
    assert set(OrderStatus) == {SUBMITTED, ACCEPTED, IN_PROGRESS, PROPOSED, COMPLETED, CANCELLED}


@pytest.mark.parametrize(
    ("status", "by_staff"),
    [
        # The customer, until a case is being worked on.
        (SUBMITTED, False),
        (ACCEPTED, False),
        # Staff, as long as the order is not completed.
        (SUBMITTED, True),
        (ACCEPTED, True),
        (IN_PROGRESS, True),
        (PROPOSED, True),
    ],
)
def test_an_open_order_is_cancelled(status: OrderStatus, by_staff: bool) -> None:
    assert check_cancellable(status, by_staff=by_staff) is True


@pytest.mark.parametrize("by_staff", [False, True])
def test_cancelling_a_cancelled_order_again_changes_nothing(by_staff: bool) -> None:
    assert check_cancellable(CANCELLED, by_staff=by_staff) is False


@pytest.mark.parametrize("by_staff", [False, True])
def test_nobody_cancels_a_completed_order(by_staff: bool) -> None:
    with pytest.raises(Conflict) as refused:
        check_cancellable(COMPLETED, by_staff=by_staff)
    assert refused.value.detail == "a completed order cannot be cancelled"
    assert refused.value.extensions == {"state": "completed"}


@pytest.mark.parametrize("status", [IN_PROGRESS, PROPOSED])
def test_the_customer_cannot_cancel_once_work_has_started(status: OrderStatus) -> None:
    with pytest.raises(Conflict) as refused:
        check_cancellable(status, by_staff=False)
    assert refused.value.detail == f"work on this order has started ({status.value}); contact us to cancel it"
    assert refused.value.extensions == {"state": status.value}


@pytest.mark.parametrize(
    ("active", "archived", "orderable"),
    [(True, False, True), (False, False, False), (True, True, False), (False, True, False)],
)
def test_only_an_active_product_not_archived_can_be_ordered(
    active: bool, archived: bool, orderable: bool
) -> None:
    assert is_orderable(active=active, archived=archived) is orderable
