"""The worker profile's summary of py-spy's raw stacks (benchmarks/worker_profile.py)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.worker_profile import summarise


def test_shares_count_a_function_once_per_stack_and_own_time_at_the_leaf(tmp_path: Path):
    # py-spy writes short file names; a full path (older py-spy, odd installs) is shortened too.
    site = "/srv/.venv/lib/python3.11/site-packages"
    (tmp_path / "worker-1.stacks").write_text(
        "handle (gunicorn/workers/gthread.py:280);wait (psycopg/connection.py:495);"
        "wait (psycopg/connection.py:497) 6\n"
        "handle (gunicorn/workers/gthread.py:281);verify (http_message_signatures/signatures.py:544) 2\n"
    )
    (tmp_path / "worker-2.stacks").write_text(f"handle ({site}/gunicorn/workers/gthread.py:280) 2\n\n")

    summary = summarise(sorted(tmp_path.glob("*.stacks")), top=3).splitlines()

    assert summary[0] == "10 samples of the GIL holder; inclusive share, top 3:"
    # Line numbers and install prefixes are dropped; the recursive wait counts once per stack.
    assert summary[1:4] == [" 100.0%  handle (gunicorn/workers/gthread.py)",
                            "  60.0%  wait (psycopg/connection.py)",
                            "  20.0%  verify (http_message_signatures/signatures.py)"]
    assert summary[4] == "own share, top 3:"
    assert summary[5:] == ["  60.0%  wait (psycopg/connection.py)",
                           "  20.0%  verify (http_message_signatures/signatures.py)",
                           "  20.0%  handle (gunicorn/workers/gthread.py)"]


def test_no_samples_says_why_it_may_be_empty(tmp_path: Path):
    assert "ptrace" in summarise([], top=5)
