"""Birthday bonuses: the birth date on the member profile (API, CLI, console, erasure, key rotation)
and the award-birthday-bonuses job (the day in the alliance's time zone, 29 February, the version in
force and the member's tier, once per member and year, even with two runs at once)."""

from __future__ import annotations

import threading
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select, update

from alliance.domain.earning import TierLevel
from alliance.domain.errors import ValidationFailed
from alliance.domain.pii import with_new_active_key
from alliance.extensions import HubState, hub_state
from alliance.models import AuditLogEntry, BirthdayAward, JournalTransaction, Member, MemberProfile, TierPolicyVersion
from alliance.services import birthday_bonus, member_admin, member_console, tier_policy
from alliance.services.accounts import member_balances
from alliance.services.pii_rotation import reencrypt_stale_profiles
from tests.back_office_support import BackOffice, member_id_of, other_hub, raw_table_text, run_cli
from tests.console_support import signed_in, text_of

POLICY = birthday_bonus.Policy(time_zone="UTC", expiry_months=24)
LADDER = [TierLevel("standard", 0, Decimal("1"), 0), TierLevel("silver", 100, Decimal("1.25"), 50),
          TierLevel("gold", 200, Decimal("1.5"), 100)]
V2_FROM = datetime(2027, 6, 1, tzinfo=timezone.utc)
LADDER_V2 = [TierLevel("standard", 0, Decimal("1"), 10), TierLevel("silver", 100, Decimal("1.25"), 70),
             TierLevel("gold", 200, Decimal("1.5"), 0)]
ENROLLED = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)


def _schedule(hub: HubState, effective_from: datetime, levels: list[TierLevel]) -> None:
    with hub.unit_of_work() as uow:
        tier_policy.propose_version(uow.session, basis="spend", window_months=12, downgrade="to_earned",
                                    period_months=None, levels=levels, effective_from=effective_from,
                                    now=effective_from - timedelta(hours=1), actor="test:tiers")
        uow.commit()


def _member(hub: HubState, *, born: str | None, tier: str = "silver", status: str = "active") -> tuple[int, str]:
    with hub.unit_of_work() as uow:
        profile: dict[str, str] = {"name": f"A {tier} member"}
        if born:
            profile["birth_date"] = born
        enrolment = member_admin.enrol_with_profile(uow.session, key_ring=hub.key_ring, profile=profile,
                                                    now=ENROLLED, actor="test:desk")
        uow.session.execute(update(Member).where(Member.id == enrolment.member_id).values(tier=tier, status=status))
        uow.commit()
    return enrolment.member_id, enrolment.member_number


def _run(hub: HubState, at: datetime, policy: birthday_bonus.Policy = POLICY, limit: int = 1000) -> int:
    with hub.unit_of_work() as uow:
        done = birthday_bonus.award_birthday_bonuses(uow.session, now=at, limit=limit, policy=policy)
        uow.commit()
    return done


def _available(hub: HubState, member_id: int) -> int:
    with hub.unit_of_work() as uow:
        return member_balances(uow.session, member_id).get("available", 0)


def _awards(hub: HubState) -> list[tuple[int, int, str, int, int]]:
    with hub.unit_of_work() as uow:
        return [tuple(row) for row in uow.session.execute(  # type: ignore[misc]
            select(BirthdayAward.member_id, BirthdayAward.year, BirthdayAward.tier, BirthdayAward.points,
                   TierPolicyVersion.version)
            .join(TierPolicyVersion, TierPolicyVersion.id == BirthdayAward.policy_version_id)
            .order_by(BirthdayAward.member_id, BirthdayAward.year))]


@pytest.fixture
def ladder(app: Flask) -> HubState:
    """A hub whose tier policy (version 2, from 2027-01-01) gives silver 50 and gold 100 birthday points."""
    hub = hub_state(app)
    _schedule(hub, datetime(2027, 1, 1, tzinfo=timezone.utc), LADDER)
    return hub


# --- the birth date on the profile --------------------------------------------------------------


def test_the_api_sets_reads_clears_and_refuses_birth_dates(app: Flask) -> None:
    bo = BackOffice(app)
    number, _ = bo.enrol(name="Ana Prima", birth_date="1990-03-12")
    shown = bo.get(f"/members/{number}", role="customer_service")
    assert shown.status == 200 and shown.body["profile"]["birth_date"] == "1990-03-12"
    with bo.hub.unit_of_work() as uow:
        profile = uow.session.get_one(MemberProfile, member_id_of(bo.hub, number))
        assert profile.birthday == 312 and profile.birth_date_encrypted.startswith("v1.k1.")
    assert not any("1990-03-12" in value for value in raw_table_text(bo.hub, "member_profiles"))

    changed = bo.patch(f"/members/{number}/profile", {"birth_date": "1988-12-31"}, role="customer_service")
    assert changed.status == 200 and changed.body["profile"]["birth_date"] == "1988-12-31"
    assert changed.body["profile"]["name"] == "Ana Prima"
    tomorrow = (datetime.now(timezone.utc) + timedelta(days=2)).date().isoformat()
    for bad, words in (("1899-12-31", "before 1900"), (tomorrow, "in the future"), ("1990-02-30", "Not a valid"),
                       ("12/03/1990", "Not a valid"), (19900312, "Not a valid")):
        refused = bo.patch(f"/members/{number}/profile", {"birth_date": bad}, role="customer_service")
        assert refused.status == 422, (bad, refused.body)
        assert refused.headers["Content-Type"].startswith("application/problem+json")
        assert words in str(refused.body), (bad, refused.body)
    assert bo.get(f"/members/{number}", role="customer_service").body["profile"]["birth_date"] == "1988-12-31"

    cleared = bo.patch(f"/members/{number}/profile", {"birth_date": None}, role="customer_service")
    assert cleared.status == 200 and cleared.body["profile"]["birth_date"] is None
    with bo.hub.unit_of_work() as uow:
        profile = uow.session.get_one(MemberProfile, member_id_of(bo.hub, number))
        assert profile.birthday is None and profile.birth_date_encrypted is None
        entry = uow.session.scalars(select(AuditLogEntry).where(AuditLogEntry.action == "member.profile.update")
                                    .order_by(AuditLogEntry.sequence.desc())).first()
    assert entry is not None and entry.after == {"changed_fields": ["birth_date"]}


def test_a_member_enrolled_without_personal_data_can_be_given_a_birth_date(app: Flask) -> None:
    hub = hub_state(app)
    with hub.unit_of_work() as uow:
        enrolment = member_admin.enrol_with_profile(uow.session, key_ring=hub.key_ring, profile={}, now=ENROLLED,
                                                    actor="test:desk")
        uow.session.execute(MemberProfile.__table__.delete().where(MemberProfile.member_id == enrolment.member_id))
        uow.commit()
    with hub.unit_of_work() as uow:
        member_admin.update_profile(uow.session, key_ring=hub.key_ring, member_number=enrolment.member_number,
                                    changes={"birth_date": date(2001, 7, 4)}, now=ENROLLED, actor="test:desk")
        uow.commit()
    with hub.unit_of_work() as uow:
        profile = member_admin.read_profile(uow.session, key_ring=hub.key_ring, member_id=enrolment.member_id)
        with pytest.raises(ValidationFailed, match="not a date"):
            member_admin.birth_date_of("4 July 2001", now=ENROLLED)
    assert profile["birth_date"] == "2001-07-04"


def test_the_cli_sets_clears_and_refuses_birth_dates(app: Flask) -> None:
    hub = hub_state(app)
    enrolled = run_cli(app, "members", "enrol", "--name", "Cli Person", "--birth-date", "1975-08-09")
    assert enrolled.exit_code == 0, enrolled.output
    number = enrolled.output.split()[1].rstrip(",")
    member_id = member_id_of(hub, number)

    def birthday() -> tuple[int | None, str | None]:
        with hub.unit_of_work() as uow:
            profile = uow.session.get_one(MemberProfile, member_id)
            read = member_admin.read_profile(uow.session, key_ring=hub.key_ring, member_id=member_id)
            return profile.birthday, read["birth_date"]

    assert birthday() == (809, "1975-08-09")
    changed = run_cli(app, "members", "set-birth-date", "--member", number, "--birth-date", "2000-02-29")
    assert changed.exit_code == 0, changed.output
    assert f"birth date of member {number} set to 2000-02-29" in changed.output
    assert birthday() == (229, "2000-02-29")
    for bad, words in (("1850-01-01", "before 1900"), ("2999-01-01", "in the future"), ("soon", "not a date")):
        refused = run_cli(app, "members", "set-birth-date", "--member", number, "--birth-date", bad)
        assert refused.exit_code == 1 and words in refused.output, refused.output
    assert run_cli(app, "members", "set-birth-date", "--member", number).exit_code == 2
    assert run_cli(app, "members", "enrol", "--birth-date", "1899-01-01").exit_code == 1
    assert birthday() == (229, "2000-02-29")
    cleared = run_cli(app, "members", "set-birth-date", "--member", number, "--clear")
    assert cleared.exit_code == 0 and "removed" in cleared.output
    assert birthday() == (None, None)


def test_erasure_clears_the_birth_date_and_the_member_gets_no_bonus(ladder: HubState) -> None:
    hub = ladder
    member_id, number = _member(hub, born="1990-03-12")
    with hub.unit_of_work() as uow:
        member_admin.erase(uow.session, member_number=number, now=ENROLLED, actor="test:desk")
        uow.commit()
    with hub.unit_of_work() as uow:
        profile = uow.session.get_one(MemberProfile, member_id)
        assert (profile.birthday, profile.birth_date_encrypted) == (None, None)
        assert member_admin.read_profile(uow.session, key_ring=hub.key_ring, member_id=member_id)["birth_date"] is None
    assert _run(hub, datetime(2027, 3, 12, 12, 0, tzinfo=timezone.utc)) == 0


def test_key_rotation_reencrypts_the_birth_date(app: Flask, tmp_path: Path) -> None:
    hub = hub_state(app)
    member_id, _ = _member(hub, born="1990-03-12")
    with other_hub(hub, tmp_path / "ring-b", pii_keys=with_new_active_key(hub.key_ring.to_config(), "k2")) as app_b:
        hub_b = hub_state(app_b)
        with hub_b.unit_of_work() as uow:
            assert reencrypt_stale_profiles(uow.session, key_ring=hub_b.key_ring, limit=10) == 1
            uow.commit()
        with hub_b.unit_of_work() as uow:
            profile = uow.session.get_one(MemberProfile, member_id)
            assert profile.birth_date_encrypted.startswith("v1.k2.") and profile.name_encrypted.startswith("v1.k2.")
            assert member_admin.read_profile(uow.session, key_ring=hub_b.key_ring,
                                             member_id=member_id)["birth_date"] == "1990-03-12"
            assert reencrypt_stale_profiles(uow.session, key_ring=hub_b.key_ring, limit=10) == 0


def test_the_console_shows_the_birthday_without_the_year(app: Flask) -> None:
    hub = hub_state(app)
    _, number = _member(hub, born="1990-03-12")
    _, nobody = _member(hub, born=None)
    service = signed_in(app, "cass", "customer_service")
    shown = text_of(service.get(f"/console/members/{number}"))
    assert "Birthday 12 March" in shown and "1990" not in shown
    assert "Birthday not given" in text_of(service.get(f"/console/members/{nobody}"))
    assert member_console.birthday_words("2000-02-29") == "29 February"


# --- the award ----------------------------------------------------------------------------------


def test_the_job_pays_each_tier_its_bonus_on_the_day_once(ladder: HubState) -> None:
    hub = ladder
    silver, silver_number = _member(hub, born="1990-03-12", tier="silver")
    gold, _ = _member(hub, born="1985-03-12", tier="gold")
    standard, _ = _member(hub, born="1970-03-12", tier="standard")
    other_day, _ = _member(hub, born="1990-03-13", tier="gold")
    closed, _ = _member(hub, born="1990-03-12", tier="gold", status="closed")
    unknown, _ = _member(hub, born=None, tier="gold")
    day = datetime(2027, 3, 12, 8, 0, tzinfo=timezone.utc)

    assert _run(hub, day - timedelta(days=1)) == 0
    assert _run(hub, day) == 2
    assert _run(hub, day + timedelta(hours=10)) == 0
    assert _awards(hub) == [(silver, 2027, "silver", 50, 2), (gold, 2027, "gold", 100, 2)]
    assert [_available(hub, member) for member in (silver, gold, standard, other_day, closed, unknown)] == \
        [50, 100, 0, 0, 0, 0]
    with hub.unit_of_work() as uow:
        posted = uow.session.scalars(select(JournalTransaction).where(
            JournalTransaction.memo == "birthday:2027").order_by(JournalTransaction.id)).all()
        entry = uow.session.scalars(select(AuditLogEntry).where(AuditLogEntry.action == "member.birthday_bonus")
                                    .order_by(AuditLogEntry.sequence)).first()
    assert len(posted) == 2 and all(row.partner_id is None for row in posted)
    assert entry is not None and entry.actor == "job:award-birthday-bonuses"
    assert entry.subject == f"member:{silver_number}"
    assert entry.after == {"year": 2027, "points": 50, "tier": "silver", "policy_version": 2,
                           "transaction_id": posted[0].id}
    assert _run(hub, day + timedelta(days=1)) == 1  # the member born on 13 March
    assert _run(hub, day.replace(year=2028)) == 2  # a new year, a new bonus
    assert _available(hub, silver) == 100


def test_the_day_is_the_alliances_and_29_february_falls_on_28_february_in_common_years(ladder: HubState) -> None:
    hub = ladder
    leap, _ = _member(hub, born="2000-02-29")
    auckland = birthday_bonus.Policy(time_zone="Pacific/Auckland", expiry_months=24)
    assert _run(hub, datetime(2027, 2, 27, 10, 0, tzinfo=timezone.utc)) == 0
    # 11:30 UTC on 27 February is already 28 February in Auckland.
    assert _run(hub, datetime(2027, 2, 27, 11, 30, tzinfo=timezone.utc), auckland) == 1
    assert _run(hub, datetime(2027, 2, 28, 10, 0, tzinfo=timezone.utc)) == 0
    assert _run(hub, datetime(2028, 2, 28, 10, 0, tzinfo=timezone.utc)) == 0  # a leap year: not yet
    assert _run(hub, datetime(2028, 2, 29, 10, 0, tzinfo=timezone.utc)) == 1
    assert [(year, points) for _, year, _, points, _ in _awards(hub)] == [(2027, 50), (2028, 50)]
    assert _available(hub, leap) == 100
    assert birthday_bonus.birthdays_on(date(2027, 2, 28)) == (228, 229)
    assert birthday_bonus.birthdays_on(date(2028, 2, 28)) == (228,)


def test_the_version_in_force_and_the_members_tier_set_the_bonus(ladder: HubState) -> None:
    hub = ladder
    _schedule(hub, V2_FROM, LADDER_V2)
    standard, _ = _member(hub, born="1990-06-01", tier="standard")
    silver, _ = _member(hub, born="1990-06-01", tier="silver")
    gold, _ = _member(hub, born="1990-06-01", tier="gold")
    early, _ = _member(hub, born="1990-05-31", tier="gold")
    assert _run(hub, V2_FROM - timedelta(hours=1)) == 1  # 31 May, version 2: gold 100
    assert _run(hub, V2_FROM + timedelta(hours=1)) == 2  # 1 June, version 3: standard 10, silver 70, gold 0
    assert [_available(hub, member) for member in (standard, silver, gold, early)] == [10, 70, 0, 100]
    assert [(member, tier, points, version) for member, _, tier, points, version in _awards(hub)] == \
        [(standard, "standard", 10, 3), (silver, "silver", 70, 3), (early, "gold", 100, 2)]


def test_no_version_with_a_bonus_pays_nothing_and_the_batch_limit_holds(app: Flask) -> None:
    hub = hub_state(app)
    members = [_member(hub, born="1990-03-12", tier="gold")[0] for _ in range(3)]
    day = datetime(2027, 3, 12, 8, 0, tzinfo=timezone.utc)
    assert _run(hub, day) == 0  # the seeded version gives no birthday bonus
    _schedule(hub, datetime(2027, 1, 1, tzinfo=timezone.utc), LADDER)
    assert _run(hub, day, limit=2) == 2
    assert _run(hub, day, limit=2) == 1
    assert [_available(hub, member) for member in members] == [100, 100, 100]


def test_the_job_runs_from_the_cli_and_the_scheduler_knows_it(ladder: HubState, app: Flask) -> None:
    from alliance.scheduler import hub_jobs

    hub = ladder
    member_id, _ = _member(hub, born="1990-03-12", tier="gold")
    job = {job.name: job for job in hub_jobs(hub)}["award-birthday-bonuses"]
    assert job.interval_s == 3600
    result = run_cli(app, "jobs", "award-birthday-bonuses", "--now", "2027-03-12T09:00:00+00:00")
    assert result.exit_code == 0, result.output
    assert "award-birthday-bonuses: 1 birthday bonuses awarded" in result.output
    again = run_cli(app, "jobs", "award-birthday-bonuses", "--now", "2027-03-12T10:00:00+00:00")
    assert "award-birthday-bonuses: 0 birthday bonuses awarded" in again.output
    assert _available(hub, member_id) == 100


def test_two_runs_at_once_pay_each_member_once(pg_hub: HubState) -> None:
    hub = pg_hub
    _schedule(hub, datetime(2027, 1, 1, tzinfo=timezone.utc), LADDER)
    members = [_member(hub, born="1990-03-12", tier="gold")[0] for _ in range(6)]
    day = datetime(2027, 3, 12, 8, 0, tzinfo=timezone.utc)
    barrier = threading.Barrier(2)
    done: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with hub.unit_of_work() as uow:
                barrier.wait(timeout=10)
                done.append(birthday_bonus.award_birthday_bonuses(uow.session, now=day, limit=1000, policy=POLICY))
                uow.commit()
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sum(done) == 6
    assert [_available(hub, member) for member in members] == [100] * 6
    assert len(_awards(hub)) == 6
