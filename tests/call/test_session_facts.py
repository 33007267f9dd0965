"""The pure mapping from an outbound call's payment facts to the agent session's variables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import attrs
import pytest

from archer.call.session_facts import (
    MAX_VARIABLES,
    PaymentFacts,
    as_metadata,
    check_variables,
    format_amount,
    session_variables,
)

FACTS = PaymentFacts(
    purpose="fraud_alert",
    transaction_id=42,
    merchant="Example Store",
    amount_cents=-41250,
    currency="USD",
    posted_at=datetime(2026, 3, 1, 14, 5, 33, tzinfo=UTC),
    card_last4="2207",
)


def test_the_facts_become_the_named_variables() -> None:
    assert session_variables(FACTS) == {
        "call_purpose": "fraud_alert",
        "transaction_id": 42,
        "merchant": "Example Store",
        "amount": "412.50",
        "currency": "USD",
        "transaction_time": "2026-03-01T14:05Z",
        "card_last4": "2207",
    }


def test_a_time_in_another_zone_is_given_in_utc() -> None:
    local = datetime(2026, 3, 1, 15, 5, tzinfo=timezone(timedelta(hours=1)))
    variables = session_variables(attrs.evolve(FACTS, posted_at=local))
    assert variables["transaction_time"] == "2026-03-01T14:05Z"


def test_an_unknown_card_is_an_empty_string_not_a_missing_variable() -> None:
    variables = session_variables(attrs.evolve(FACTS, card_last4=None))
    assert variables["card_last4"] == ""


@pytest.mark.parametrize(
    ("cents", "text"), [(-41250, "412.50"), (5, "0.05"), (-100, "1.00"), (123456789, "1234567.89")]
)
def test_amounts_are_major_units_with_two_decimals(cents: int, text: str) -> None:
    assert format_amount(cents) == text


def test_no_account_number_name_or_balance_can_travel() -> None:
    """The facts have no field for them, so the variables hold only these seven names."""
    assert set(session_variables(FACTS)) == {
        "call_purpose",
        "transaction_id",
        "merchant",
        "amount",
        "currency",
        "transaction_time",
        "card_last4",
    }
    assert not {"account", "balance", "name", "pin"} & set(attrs.fields_dict(PaymentFacts))


def test_line_metadata_is_strings_only() -> None:
    metadata = as_metadata({**session_variables(FACTS), "flag": True, "off": False, "x": 1.5})
    assert all(isinstance(v, str) for v in metadata.values())
    assert (metadata["transaction_id"], metadata["flag"], metadata["off"], metadata["x"]) == (
        "42",
        "true",
        "false",
        "1.5",
    )


@pytest.mark.parametrize(
    ("variables", "problem"),
    [
        ({"bad-name": "x"}, "not 1-64"),
        ({"": "x"}, "not 1-64"),
        ({"a" * 65: "x"}, "not 1-64"),
        ({"system__time": "x"}, "reserved prefix"),
        ({"secret__key": "x"}, "reserved prefix"),
        ({"list": ["x"]}, "not a string, number or boolean"),
        ({f"v{n}": n for n in range(MAX_VARIABLES + 1)}, "more than 64"),
    ],
)
def test_what_cartesia_would_refuse_is_refused(variables: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        check_variables(variables)


def test_sixty_four_good_variables_pass() -> None:
    check_variables({f"v{n}": n for n in range(MAX_VARIABLES)})
