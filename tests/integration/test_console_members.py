"""Customer service's member pages: searching by POST without details in any URL, the member page, and card
replacement, PIN reset, one-time codes and complaints, each with its audit entry and its refusals."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import func, select, update

from alliance.extensions import HubState, hub_state
from alliance.models import AuditLogEntry, Card, Complaint, Member, Partner, Purchase, RedemptionCode
from alliance.services import ledger, member_admin
from tests.console_support import ConsoleClient, audit_actions, build_alliance, signed_in, text_of

SEARCH = "/console/members"
PHONE = "+33 6 12 34 56 78"
EMAIL = "Mia.Member@example.org"
LINK_PATTERN = re.compile(r'(?:href|action)="([^"]*)"')


def enrol(hub: HubState, **profile: str) -> tuple[str, str]:
    """A member with personal data, as customer service enrols them; (member number, card number)."""
    with hub.unit_of_work() as uow:
        enrolment = member_admin.enrol_with_profile(uow.session, key_ring=hub.key_ring, profile=profile,
                                                    now=datetime.now(timezone.utc), actor="cli:test")
        uow.commit()
    return enrolment.member_number, enrolment.card_number


def busy_member(hub: HubState) -> tuple[str, str]:
    """The alliance's member with purchases, redemptions and lots: (member number, card number)."""
    with hub.unit_of_work() as uow:
        member_id = uow.session.scalar(select(Purchase.member_id).limit(1))
        number = uow.session.scalar(select(Member.member_number).where(Member.id == member_id))
        card = uow.session.scalar(select(Card.card_number).where(Card.member_id == member_id))
    return number, card


def links_of(response) -> list[str]:  # type: ignore[no-untyped-def]
    """Every address the page links or posts to, and where it redirects."""
    found = LINK_PATTERN.findall(response.get_data(as_text=True))
    if response.headers.get("Location"):
        found.append(response.headers["Location"])
    return found


def cards_of(hub: HubState, member_number: str) -> list[tuple[str, str, str | None, int]]:
    with hub.unit_of_work() as uow:
        return [tuple(row) for row in uow.session.execute(  # type: ignore[misc]
            select(Card.card_number, Card.status, Card.pin_hash, Card.failed_pin_attempts)
            .join(Member, Member.id == Card.member_id).where(Member.member_number == member_number)
            .order_by(Card.id))]


def count(hub: HubState, model: type) -> int:
    with hub.unit_of_work() as uow:
        return uow.session.scalar(select(func.count()).select_from(model)) or 0


@pytest.fixture
def service(app) -> ConsoleClient:  # type: ignore[no-untyped-def]
    """A customer-service user on a hub with three months of activity."""
    build_alliance(hub_state(app))
    return signed_in(app, "cass", "customer_service")


def test_search_page_shows_an_empty_form_and_who_may_open_it(app, service):
    page = service.get(SEARCH)
    assert page.status_code == 200
    shown = text_of(page)
    assert "Find a member" in shown and "Members found" not in shown
    for label in ("Member number", "Card number", "Phone number", "E-mail address"):
        assert label in shown
    assert '<form method="post" action="/console/members"' in page.get_data(as_text=True)
    # Details in a query string are never searched for: the page stays an empty form.
    from_url = service.get(SEARCH, phone=PHONE)
    assert from_url.status_code == 200 and "Members found" not in text_of(from_url)
    anonymous = ConsoleClient(app).get(SEARCH)
    assert anonymous.status_code == 302 and "/console/login" in anonymous.headers["Location"]
    number, _ = busy_member(hub_state(app))
    finance = signed_in(app, "fiona", "finance")
    for path in (SEARCH, f"{SEARCH}/{number}"):
        refused = finance.get(path)
        assert refused.status_code == 403 and "This page needs the role customer_service or admin" in text_of(refused)
    assert finance.post(SEARCH, {"member_number": number}).status_code == 403
    admin = signed_in(app, "ada", "admin")
    assert admin.get(SEARCH).status_code == 200
    nav = service.get("/console/").get_data(as_text=True)
    assert 'href="/console/members"' in nav


def test_search_by_each_detail_goes_by_post_and_no_url_carries_it(app, service):
    hub = hub_state(app)
    number, card = enrol(hub, name="Mia Member", phone=PHONE, email=EMAIL)
    spaced_card = " ".join(card[i:i + 4] for i in range(0, 16, 4))
    for field, value in (("member_number", number), ("card_number", spaced_card), ("phone", "0033612345678"),
                         ("email", EMAIL.lower())):
        found = service.post(SEARCH, {field: value})
        assert found.status_code == 303, (field, text_of(found))
        assert found.headers["Location"].endswith(f"/console/members/{number}")
        page = service.get(f"{SEARCH}/{number}")
        secrets = (card, PHONE.replace(" ", ""), "612345678", EMAIL.lower(), "example.org")
        for link in links_of(found) + links_of(page):
            assert not any(secret in link for secret in secrets), link
    # The member page shows the contact details to customer service, never the full card number.
    page = text_of(service.get(f"{SEARCH}/{number}"))
    assert "Mia Member" in page and "+33612345678" in page and EMAIL.lower() in page
    assert card not in page and card[-4:] in page


def test_several_matches_are_listed_and_none_or_nonsense_is_said_plainly(app, service):
    hub = hub_state(app)
    first, _ = enrol(hub, name="Ann One", phone=PHONE)
    second, _ = enrol(hub, name="Bob Two", phone=PHONE)
    listed = service.post(SEARCH, {"phone": PHONE})
    assert listed.status_code == 200
    shown = text_of(listed)
    assert "2 members with this phone number" in shown
    body = listed.get_data(as_text=True)
    assert f'href="/console/members/{first}"' in body and f'href="/console/members/{second}"' in body
    assert '<th scope="row" data-label="Member">' in body and '<caption>' in body
    assert not any("612345678" in link for link in links_of(listed))
    nobody = service.post(SEARCH, {"email": "nobody@example.org"})
    assert nobody.status_code == 200 and "No member has this e-mail address" in text_of(nobody)
    assert "No member has this card number" in text_of(service.post(SEARCH, {"card_number": "4000 0000 0000 0002"}))
    for form, words in (({"card_number": "12ab"}, "a card number is digits only"),
                        ({"email": "not an address"}, "the e-mail address is not valid"),
                        ({"phone": "call me"}, "the phone number is not valid"),
                        ({"phone": PHONE, "email": EMAIL}, "Fill in one detail only"),
                        ({}, "Type a member number, a card number")):
        refused = service.post(SEARCH, form)
        assert refused.status_code == 400, form
        assert words in text_of(refused), (form, text_of(refused))
    missing_csrf = service.post(SEARCH, {"phone": PHONE}, csrf=None)
    assert missing_csrf.status_code == 400 and "did not come from the console" in text_of(missing_csrf)


def test_member_page_shows_balances_lots_holds_history_tier_and_complaints(app, service):
    hub = hub_state(app)
    number, _ = busy_member(hub)
    now = datetime.now(timezone.utc)
    with hub.unit_of_work() as uow:
        member_id = uow.session.scalar(select(Member.id).where(Member.member_number == number))
        fuel = uow.session.scalar(select(Partner.id).where(Partner.code == "fuel"))
        ledger.authorize_hold(uow.session, member_id=member_id, partner_id=fuel, points=7, now=now, ttl_s=900)
        uow.commit()
    page = service.get(f"{SEARCH}/{number}")
    assert page.status_code == 200
    shown = text_of(page)
    body = page.get_data(as_text=True)
    with hub.unit_of_work() as uow:
        balances = member_admin.member_balances(uow.session, member_id)
    assert f"Available {balances['available']:,} points" in shown
    assert f"Held for redemptions {balances['held']:,} points" in shown and balances["held"] == 7
    assert "Points by lot" in shown and "aurora" in shown
    assert "Open redemption holds" in shown and "7 points" in shown
    assert "points earned" in shown and "redemption completed" in shown and "points held for a redemption" in shown
    assert "available -7, held +7" in shown
    assert "Tier" in shown and "Qualifying spend in the last 12 months: 475.00 EUR" in shown
    assert "silver from 500.00 EUR" in shown
    assert "No complaints filed for this member" in shown
    # Every table has a caption, header scopes and labelled cells.
    assert body.count("<caption>") == body.count("<table")
    assert "<th>" not in body and re.search(r"<td(?![^>]*data-label)", body) is None
    assert 'aria-sort="descending"' in body  # the history, newest first
    # No raw values a person should not read.
    assert "None" not in shown and "[]" not in shown and "member_available" not in shown


def test_history_and_lots_sort_and_page(app, service):
    hub = hub_state(app)
    number, _ = busy_member(hub)
    path = f"{SEARCH}/{number}"

    def history_points(response) -> list[int]:  # type: ignore[no-untyped-def]
        section = response.get_data(as_text=True).split('id="history"')[1]
        return [int(value.replace(",", "")) for value in
                re.findall(r'data-label="Points" class="num">(-?[\d,]+) points?<', section)]

    ascending = history_points(service.get(path, sort="points", order="asc"))
    assert ascending == sorted(ascending) and len(ascending) >= 5
    descending = history_points(service.get(path, sort="points", order="desc"))
    assert descending == sorted(descending, reverse=True)
    paged = service.get(path, page_size=10, page=1)
    assert len(history_points(paged)) <= 10
    lots_page = service.get(path, sort="expires", order="desc").get_data(as_text=True)
    expiries = re.findall(r'data-label="Expires"><time datetime="([^"]+)"', lots_page)
    assert expiries == sorted(expiries, reverse=True) and expiries
    assert service.get(path, sort="nonsense").status_code == 400
    assert service.get(f"{SEARCH}/no-such-member").status_code == 404


def test_empty_member_page_says_so(app, service):
    number, _ = enrol(hub_state(app), name="New Member")
    shown = text_of(service.get(f"{SEARCH}/{number}"))
    assert "No points held in lots" in shown and "No redemption is waiting" in shown
    assert "No points have moved for this member yet" in shown and "Available 0 points" in shown
    assert "Qualifying spend in the last 12 months: 0.00 EUR" in shown


def test_card_replacement_shows_the_new_number_once_and_records_the_reason(app, service):
    hub = hub_state(app)
    number, old_card = busy_member(hub)
    path = f"{SEARCH}/{number}/cards/1/replacement"
    manager = signed_in(app, "paco", "partner_manager")
    before = audit_actions(hub)
    for form, words in (({"reason": "lost"}, "Tick the box"), ({"confirm": "yes"}, "Say why")):
        refused = service.post(path, form)
        assert refused.status_code == 400 and words in text_of(refused)
    assert service.post(path, {"confirm": "yes", "reason": "lost"}, csrf=None).status_code == 400
    assert manager.post(path, {"confirm": "yes", "reason": "x"}).status_code == 403
    assert audit_actions(hub) == before and [status for _, status, _, _ in cards_of(hub, number)] == ["active"]
    done = service.post(path, {"confirm": "yes", "reason": "lost on the train"})
    assert done.status_code == 200
    cards = cards_of(hub, number)
    assert [status for _, status, _, _ in cards] == ["blocked", "active"] and cards[0][0] == old_card
    new_card = cards[1][0]
    shown = text_of(done)
    assert " ".join(new_card[i:i + 4] for i in range(0, 16, 4)) in shown and "Shown only this once" in shown
    assert not any(new_card in link for link in links_of(done))
    member_page = service.get(f"{SEARCH}/{number}").get_data(as_text=True)
    assert new_card not in member_page and new_card[-4:] in member_page
    # The lost card's number still finds its member, as does the new one.
    for card in (old_card, new_card):
        assert service.post(SEARCH, {"card_number": card}).headers["Location"].endswith(f"/console/members/{number}")
    with hub.unit_of_work() as uow:
        entry = uow.session.scalars(select(AuditLogEntry).where(AuditLogEntry.action == "card.replace")).one()
    assert entry.actor == "console:cass" and entry.subject == f"member:{number}"
    assert entry.after["reason"] == "lost on the train" and new_card not in str(entry.after)
    # The blocked card cannot be replaced again, and nothing changes.
    again = service.post(path, {"confirm": "yes", "reason": "again"})
    assert again.status_code == 303
    assert "the card is already blocked" in text_of(service.get(f"{SEARCH}/{number}"))
    assert len(cards_of(hub, number)) == 2
    assert service.post(f"{SEARCH}/{number}/cards/9/replacement", {"confirm": "yes", "reason": "x"}).status_code == 303
    assert len(cards_of(hub, number)) == 2


def test_pin_reset_needs_the_same_strong_pin_twice_and_unlocks_the_card(app, service):
    hub = hub_state(app)
    number, card = busy_member(hub)
    with hub.unit_of_work() as uow:
        uow.session.execute(update(Card).where(Card.card_number == card).values(failed_pin_attempts=5))
        uow.commit()
    assert "PIN locked" in text_of(service.get(f"{SEARCH}/{number}"))
    path = f"{SEARCH}/{number}/cards/1/pin"
    (_, _, hash_before, _), = cards_of(hub, number)
    finance = signed_in(app, "fiona", "finance")
    before = audit_actions(hub)
    for form, words in (({"pin": "4826", "pin_again": "4827"}, "The two PINs typed differ"),
                        ({"pin": "1234", "pin_again": "1234"}, "too easy to guess"),
                        ({"pin": "7777", "pin_again": "7777"}, "too easy to guess"),
                        ({"pin": "12a4", "pin_again": "12a4"}, "a PIN is 4 to 12 digits"),
                        ({"pin": "", "pin_again": ""}, "a PIN is 4 to 12 digits")):
        refused = service.post(path, form)
        assert refused.status_code == 303
        assert words in text_of(service.get(f"{SEARCH}/{number}")), form
    assert service.post(path, {"pin": "4826", "pin_again": "4826"}, csrf=None).status_code == 400
    assert finance.post(path, {"pin": "4826", "pin_again": "4826"}).status_code == 403
    assert cards_of(hub, number) == [(card, "active", hash_before, 5)] and audit_actions(hub) == before
    done = service.post(path, {"pin": "4826", "pin_again": "4826"})
    assert done.status_code == 303 and done.headers["Location"].endswith(f"/console/members/{number}#cards")
    shown = text_of(service.get(f"{SEARCH}/{number}"))
    assert f"The PIN of card ••••••••••••{card[-4:]} is reset and the card is unlocked" in shown
    assert "PIN locked" not in shown
    (_, status, hash_after, failures), = cards_of(hub, number)
    assert status == "active" and failures == 0 and hash_after != hash_before
    assert audit_actions(hub)[-1] == ("console:cass", "card.pin.reset", f"card:••••••••••••{card[-4:]}")


def test_one_time_code_is_shown_once_with_its_expiry(app, service):
    hub = hub_state(app)
    number, _ = busy_member(hub)
    path = f"{SEARCH}/{number}/redemption-codes"
    assert service.post(path, csrf=None).status_code == 400
    assert signed_in(app, "paco", "partner_manager").post(path).status_code == 403
    assert count(hub, RedemptionCode) == 0
    issued = service.post(path)
    assert issued.status_code == 200
    code = re.search(r'data-testid="redemption-code"><code>([A-Z0-9]+)</code>', issued.get_data(as_text=True))
    assert code is not None and len(code.group(1)) == 10
    shown = text_of(issued)
    assert "Shown only this once" in shown and "Valid until" in shown
    assert not any(code.group(1) in link for link in links_of(issued))
    assert code.group(1) not in service.get(f"{SEARCH}/{number}").get_data(as_text=True)
    assert count(hub, RedemptionCode) == 1
    assert audit_actions(hub)[-1] == ("console:cass", "member.redemption_code.issue", f"member:{number}")
    unknown = service.post(f"{SEARCH}/nobody/redemption-codes")
    assert unknown.status_code == 303 and count(hub, RedemptionCode) == 1


def test_filing_a_complaint_about_one_of_the_members_purchases(app, service):
    hub = hub_state(app)
    number, _ = busy_member(hub)
    other, _ = enrol(hub, name="Other Member")
    with hub.unit_of_work() as uow:
        purchase_id, receipt = uow.session.execute(
            select(Purchase.id, Purchase.receipt_id).order_by(Purchase.purchased_at.desc())).first()
    page = service.get(f"{SEARCH}/{number}").get_data(as_text=True)
    assert f'<option value="{purchase_id}">{receipt} · aurora · ' in page and "30.00 EUR</option>" in page
    path = f"{SEARCH}/{number}/complaints"
    complaints_before = count(hub, Complaint)
    audit_before = audit_actions(hub)
    for form, words in (
        ({"purchase": str(purchase_id), "partner": "fuel", "category": "wrong_points", "description": "x"},
         "was made at aurora, not fuel"),
        ({"purchase": str(purchase_id), "redemption_reference": "R1", "category": "other", "description": "x"},
         "a purchase or a redemption, not both"),
        ({"category": "other", "description": "no partner"}, "name the partner"),
        ({"partner": "aurora", "category": "other", "description": "x", "redemption_reference": "nope"},
         "this partner has no redemption 'nope'"),
    ):
        assert service.post(path, form).status_code == 303
        assert words in text_of(service.get(f"{SEARCH}/{number}")), form
    for form in ({"partner": "aurora", "category": "other"}, {"partner": "aurora", "category": "bogus",
                                                               "description": "x"},
                 {"purchase": "first", "category": "other", "description": "x"}):
        assert service.post(path, form).status_code == 400, form
    # Another member's purchase cannot be named through this member's page.
    assert service.post(f"{SEARCH}/{other}/complaints", {"purchase": str(purchase_id), "category": "other",
                                                         "description": "x"}).status_code == 303
    assert f"member {other} has no such purchase" in text_of(service.get(f"{SEARCH}/{other}"))
    assert service.post(path, {"partner": "aurora", "category": "other", "description": "x"},
                        csrf=None).status_code == 400
    assert count(hub, Complaint) == complaints_before and audit_actions(hub) == audit_before
    filed = service.post(path, {"purchase": str(purchase_id), "category": "wrong_points",
                                "description": "The receipt shows 30 points, the card 3."})
    assert filed.status_code == 303 and filed.headers["Location"].endswith("#complaints")
    with hub.unit_of_work() as uow:
        complaint = uow.session.scalars(select(Complaint).order_by(Complaint.id.desc())).first()
        member_id = uow.session.scalar(select(Member.id).where(Member.member_number == number))
    assert (complaint.purchase_id, complaint.member_id, complaint.opened_by) == (purchase_id, member_id,
                                                                                  "console:cass")
    shown = text_of(service.get(f"{SEARCH}/{number}"))
    assert f"Complaint #{complaint.id} is filed" in shown and f"purchase {receipt}" in shown
    assert f'href="/console/complaints?member={number}#complaint-{complaint.id}"' in \
        service.get(f"{SEARCH}/{number}").get_data(as_text=True)
    assert audit_actions(hub)[-1] == ("console:cass", "complaint.open", f"complaint:{complaint.id}")


def test_a_member_with_erased_data_says_so(app, service):
    hub = hub_state(app)
    number, _ = enrol(hub, name="Gone Member", email="gone@example.org")
    with hub.unit_of_work() as uow:
        member_admin.erase(uow.session, member_number=number, now=datetime.now(timezone.utc) - timedelta(minutes=1),
                           actor="cli:test")
        uow.commit()
    shown = text_of(service.get(f"{SEARCH}/{number}"))
    assert "erased at the member's request" in shown and "Gone Member" not in shown
    assert "No member has this e-mail address" in text_of(service.post(SEARCH, {"email": "gone@example.org"}))


def test_the_member_page_reads_the_tier_policy_in_force(app, service, monkeypatch):
    from alliance.console import member_views
    from alliance.domain.earning import TierLevel
    from alliance.services import tier_policy

    hub = hub_state(app)
    number, _ = busy_member(hub)
    now = datetime.now(timezone.utc)
    starts = now + timedelta(minutes=5)
    with hub.unit_of_work() as uow:
        tier_policy.propose_version(
            uow.session, basis="tenure", window_months=None, downgrade="to_earned", period_months=None,
            levels=[TierLevel("standard", 0, Decimal("1")), TierLevel("silver", 6, Decimal("1.1")),
                    TierLevel("gold", 24, Decimal("1.5"))], effective_from=starts, now=now, actor="test:tiers")
        uow.commit()
    before = text_of(service.get(f"{SEARCH}/{number}"))
    assert "Qualifying spend in the last 12 months" in before
    monkeypatch.setattr(member_views, "now", lambda: starts + timedelta(seconds=1))
    after = text_of(service.get(f"{SEARCH}/{number}"))
    assert re.search(r"Membership: \d+ months?\. Silver from 6 months\.", after)
    assert "silver from 6 months, gold from 24 months" in after
